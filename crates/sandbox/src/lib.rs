//! Simulated outside parties on loopback, speaking the documented wire formats, for
//! `pbxgate demo` and the tests: Microsoft Entra ID (`entra`), Microsoft Graph (`graph`)
//! and the 3CX web server and XAPI (`pbx`), plus a throw-away certificate authority (`pki`).
//!
//! A crate of its own (see its Cargo.toml): it depends only on `pbxgate-wire`, never on the
//! product, so that it simulates the outside parties from their public descriptions and not
//! from pbxgate's code.

pub mod entra;
pub mod graph;
pub mod pbx;
pub mod pki;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use entra::{EntraSim, SimApp, SimUser};
use pbx::{PbxSim, SimExtension};
use pbxgate_wire::clock::Clock;

/// A simulator running in the background; stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The simulator's origin, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until dropped.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let is_tls = tls.is_some();
    let task = tokio::spawn(serve::serve(listener, tls, router));
    Ok(Running {
        addr,
        tls: is_tls,
        task,
    })
}

/// The demo tenant: who can sign in, and which extensions 3CX has.
pub const DEMO_TENANT: &str = "8f1c3a52-6b7d-4e0a-9c21-5d3e7f9a1b04";

/// The object id of the demo tenant's "pbxgate admins" group (`[entra] admin_groups`).
pub const DEMO_ADMIN_GROUP: &str = "5e1d7c3a-2b4f-4c6e-9a8d-0f1e2d3c4b5a";

pub fn demo_users() -> Vec<SimUser> {
    let user = |oid: &str, upn: &str, name: &str| SimUser {
        oid: oid.into(),
        upn: upn.into(),
        name: name.into(),
        groups: Vec::new(),
    };
    vec![
        // Mixed case on purpose: Entra keeps the case an admin typed; 3CX has lower case.
        // Alice is in the demo's admin group: she may open the admin console.
        SimUser {
            groups: vec![DEMO_ADMIN_GROUP.into()],
            ..user(
                "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
                "Alice.Adams@Contoso.com",
                "Alice Adams",
            )
        },
        user(
            "6ba7b810-9dad-41d1-80b4-00c04fd430c8",
            "bob.baker@contoso.com",
            "Bob Baker",
        ),
        // Has no extension in 3CX yet: the user sync gives her one (at the latest when she
        // signs in); with the sync off she sees the "no extension is assigned" page.
        user(
            "9c858901-8a57-4791-81fe-4c455b099bc9",
            "carol.clark@contoso.com",
            "Carol Clark",
        ),
        // A guest: the user sync leaves guests out, and sign-in refuses her with its own page.
        user(
            "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
            "gina@fabrikam.com",
            "Gina Guest",
        ),
    ]
}

/// The System Owner extension made for pbxgate, which impersonates the users. It has no
/// web password until the demo or a test gives it one.
pub const DEMO_SERVICE_EXTENSION: &str = "999";

pub fn demo_extensions() -> Vec<SimExtension> {
    let ext = |id, number: &str, first: &str, last: &str, email: &str| SimExtension {
        id,
        number: number.into(),
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
        access_password: None,
        enabled: true,
        mobile: String::new(),
        outbound_caller_id: String::new(),
        ..Default::default()
    };
    vec![
        ext(1, "100", "Reception", "Desk", "reception@contoso.com"),
        ext(2, "101", "Alice", "Adams", "alice.adams@contoso.com"),
        ext(3, "102", "Bob", "Baker", "bob.baker@contoso.com"),
        ext(4, "103", "Dan", "Day", ""),
        SimExtension {
            admin: true,
            ..ext(5, DEMO_SERVICE_EXTENSION, "pbxgate", "service", "")
        },
    ]
}

/// Entra ID, Graph and 3CX simulators, running.
pub struct Sandbox {
    pub entra: Arc<EntraSim>,
    pub entra_server: Running,
    pub graph: Arc<graph::GraphSim>,
    pub graph_server: Running,
    pub pbx: Arc<PbxSim>,
    pub pbx_server: Running,
}

/// The demo tenant's directory as Graph serves it: the sign-in users plus a few who have
/// never signed in, so the users sync has something to create.
pub fn demo_directory() -> Vec<graph::DirectoryUser> {
    let mut users: Vec<graph::DirectoryUser> = demo_users()
        .into_iter()
        .map(|u| {
            let (given, surname) = u.name.split_once(' ').unwrap_or((&u.name, ""));
            let mut g = graph::DirectoryUser::member(&u.upn, given, surname);
            g.id = u.oid;
            g.member_of = u.groups.clone();
            if u.upn.ends_with("@fabrikam.com") {
                g.user_type = "Guest".into();
            }
            g
        })
        .collect();
    for (upn, given, surname) in [
        ("dora.diaz@contoso.com", "Dora", "Diaz"),
        ("emil.ek@contoso.com", "Emil", "Ek"),
    ] {
        let mut g = graph::DirectoryUser::member(upn, given, surname);
        g.mobile_phone = Some("+49 170 5550123".into());
        users.push(g);
    }
    users
}

/// The demo tenant's shared mailbox, whose contacts make up the company phonebook.
pub const DEMO_SHARED_MAILBOX: &str = "reception@contoso.com";

/// Contacts for the demo: the shared mailbox (one contact in a subfolder, one without a phone
/// number, so left out), Alice and Bob (Alice with a subfolder), and Emil without a mailbox.
pub fn demo_contacts(g: &graph::GraphSim) {
    use graph::{MailboxAccess, SimContact};
    let shared = DEMO_SHARED_MAILBOX;
    g.add_mailbox("5f0c1d2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f", shared);
    let mut hotline = SimContact {
        display_name: "Fabrikam Support".into(),
        company_name: Some("Fabrikam".into()),
        business_phones: vec!["+1 425 555 0100".into()],
        ..Default::default()
    };
    hotline.emails = vec!["support@fabrikam.example".into()];
    g.add_contact(shared, None, hotline);
    let mut lena = SimContact::person("Lena", "Lopez", "+1 425 555 0111");
    lena.company_name = Some("Fabrikam".into());
    lena.job_title = Some("Account Manager".into());
    lena.business_phones = vec!["+1 425 555 0112".into()];
    g.add_contact(shared, None, lena);
    let mut max = SimContact::person("Max", "Müller", "+49 170 5550199");
    max.company_name = Some("Contoso Elektro".into());
    max.department = Some("Service".into());
    max.home_phones = vec!["+49 30 5550198".into()];
    g.add_contact(shared, None, max);
    let mut nora = SimContact::person("Nora", "Newsletter", "");
    nora.mobile_phone = None;
    g.add_contact(shared, None, nora);
    let suppliers = g.add_contact_folder(shared, "Suppliers", None);
    g.add_contact(
        shared,
        Some(&suppliers),
        SimContact::person("Otto", "Ortiz", "+34 600 555 010"),
    );
    let alice = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    g.add_contact(
        alice,
        None,
        SimContact::person("Paul", "Parker", "+44 7700 900123"),
    );
    let family = g.add_contact_folder(alice, "Family", None);
    g.add_contact(
        alice,
        Some(&family),
        SimContact::person("Quinn", "Adams", "+44 7700 900456"),
    );
    g.add_contact(
        "6ba7b810-9dad-41d1-80b4-00c04fd430c8",
        None,
        SimContact::person("Rita", "Ross", "+1 206 555 0142"),
    );
    g.set_mailbox_access("emil.ek@contoso.com", MailboxAccess::NoMailbox);
}

/// The Graph application permissions pbxgate's features use (users and the session
/// recheck, presence, contacts, the groups overage): what the sandbox's app is granted.
pub const PBXGATE_ROLES: [&str; 4] = [
    "User.Read.All",
    "Calendars.ReadBasic.All",
    "Contacts.Read",
    "GroupMember.Read.All",
];

/// The application registration the gateway will use.
pub struct Registration {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub certificate: Option<(Vec<u8>, String, String)>,
    /// The gateway's `public_url`.
    pub public_url: String,
}

impl Registration {
    pub fn app(&self) -> SimApp {
        let base = self.public_url.trim_end_matches('/');
        SimApp {
            client_id: self.client_id.clone(),
            secret: self.client_secret.clone(),
            certificate: self.certificate.clone(),
            redirect_uris: vec![format!("{base}/auth/callback")],
            post_logout_redirect_uris: vec![format!("{base}/auth/signed-out")],
            roles: PBXGATE_ROLES.iter().map(|r| r.to_string()).collect(),
        }
    }
}

impl Sandbox {
    /// Starts Entra (plain HTTP on loopback) and 3CX (TLS when `pbx_tls` is given) with the
    /// demo tenant and extensions.
    pub async fn start(
        registration: &Registration,
        api_client: (&str, &str),
        provisioning_secret: &str,
        pbx_tls: Option<TlsAcceptor>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let entra = Arc::new(EntraSim::new(
            DEMO_TENANT,
            vec![registration.app()],
            demo_users(),
            clock.clone(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let entra_server = spawn(listener, entra::router(entra.clone()), None)?;
        entra.set_base(&entra_server.url());
        let graph = Arc::new(graph::GraphSim::new(clock.clone()));
        graph.trust(entra.clone());
        graph.link_entra(entra.clone());
        for u in demo_directory() {
            graph.add_user(u);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let graph_server = spawn(listener, graph::router(graph.clone()), None)?;
        graph.set_base(&graph_server.url());
        demo_contacts(&graph);
        let pbx = Arc::new(PbxSim::new(
            provisioning_secret,
            api_client,
            demo_extensions(),
            clock,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let pbx_server = spawn(listener, pbx::router(pbx.clone()), pbx_tls)?;
        Ok(Self {
            entra,
            entra_server,
            graph,
            graph_server,
            pbx,
            pbx_server,
        })
    }
}
