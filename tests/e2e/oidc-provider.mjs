// Microsoft Entra ID (v2.0 endpoint) look-alike OpenID Provider for pbxgate end-to-end tests.
//
// Built on the `oidc-provider` npm package (v9, ESM-only). Usage:
//
//   node tests/e2e/oidc-provider.mjs --tenant <TENANT_GUID> --client-id <ID> \
//     --client-secret <SECRET> --redirect-uri <URI> \
//     [--post-logout-redirect-uri <URI>] [--port 0]
//
// Listens on 127.0.0.1 (port 0 = ephemeral). When ready, prints exactly one JSON line to stdout:
//   {"authority":"http://127.0.0.1:PORT","issuer":"http://127.0.0.1:PORT/<TENANT>/v2.0"}
// Everything else goes to stderr. Exits 0 on SIGTERM/SIGINT.
//
// Sign-in is automatic: an authorization request with `login_hint=<UPN>` (case-insensitive) of a
// known user completes login + consent without any UI. Without a matching hint the interaction
// page answers 400 "unknown user".

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints its "you SHOULD change ..." notices with console.info, i.e. to stdout. stdout
// is reserved for the single readiness line, so route console.log/info to stderr *before* the
// module is loaded (hence the dynamic import below) and write the readiness line with
// process.stdout.write directly.
console.log = console.error;
console.info = console.error;
const { default: Provider, interactionPolicy, errors } = await import('oidc-provider');

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------
const { values: args } = parseArgs({
  options: {
    tenant: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
    port: { type: 'string', default: '0' },
  },
  strict: true,
});
for (const required of ['tenant', 'client-id', 'client-secret', 'redirect-uri']) {
  if (!args[required]) {
    console.error(`missing required --${required}`);
    process.exit(2);
  }
}
const TENANT = args.tenant;
const PREFIX = `/${TENANT}/v2.0`; // the provider is mounted here; the issuer ends with it

// ---------------------------------------------------------------------------------------------
// Users. `sub` is deliberately different from `oid`, like Entra's pairwise per-app subject.
// ---------------------------------------------------------------------------------------------
const USERS = [
  {
    sub: 'sub-alice-W8fNpQ2vXk7LmR4tYb9HcJ3dZs6Ga1Ue5',
    oid: '3f2504e0-4f89-41d3-9a0c-0305e82c3301',
    upn: 'Alice.Adams@Contoso.com',
    name: 'Alice Adams',
  },
  {
    sub: 'sub-bob-T3kVq8RmZx1NcW6pLf0JyB5hDs9Ge2Ua7',
    oid: '6ba7b810-9dad-41d1-80b4-00c04fd430c8',
    upn: 'bob.baker@contoso.com',
    name: 'Bob Baker',
  },
];
const byUpn = (hint) => USERS.find((u) => typeof hint === 'string' && u.upn.toLowerCase() === hint.trim().toLowerCase());
const bySub = (sub) => USERS.find((u) => u.sub === sub);

// ---------------------------------------------------------------------------------------------
// Keys: a fresh RS256 signing key per run.
// ---------------------------------------------------------------------------------------------
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomUUID(),
  alg: 'RS256',
  use: 'sig',
};

// ---------------------------------------------------------------------------------------------
// Interaction policy: the default login/consent prompts, plus a login check so that a login_hint
// naming a *different* user than the current OP session forces a fresh (automatic) login.
// ---------------------------------------------------------------------------------------------
const { base: basePolicy, Check } = interactionPolicy;
const policy = basePolicy();
policy.get('login').checks.add(new Check(
  'login_hint_mismatch',
  'login_hint does not match the signed-in user',
  (ctx) => {
    const { session, params } = ctx.oidc;
    const wanted = byUpn(params.login_hint);
    if (session.accountId && wanted && wanted.sub !== session.accountId) {
      return Check.REQUEST_PROMPT;
    }
    return Check.NO_NEED_TO_PROMPT;
  },
));

const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---------------------------------------------------------------------------------------------
// Provider configuration (see node_modules/oidc-provider/lib/helpers/defaults.js).
// ---------------------------------------------------------------------------------------------
const configuration = {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: [args['redirect-uri']],
    ...(args['post-logout-redirect-uri']
      ? { post_logout_redirect_uris: [args['post-logout-redirect-uri']] } : {}),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // client_secret_basic is accepted too: oidc-provider treats the two as interchangeable.
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'RS256',
  }],
  clientAuthMethods: ['client_secret_post', 'client_secret_basic'],
  jwks: { keys: [signingJwk] },
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
  // PKCE (S256 is the only method oidc-provider v9 supports) is required for every client.
  pkce: { required: () => true },

  async findAccount(ctx, id) {
    const user = bySub(id);
    if (!user) return undefined;
    return {
      accountId: user.sub,
      async claims() {
        // Masked per requested scope according to `claims` below.
        return {
          sub: user.sub,
          oid: user.oid,
          tid: TENANT,
          ver: '2.0',
          preferred_username: user.upn,
          name: user.name,
          email: user.upn,
        };
      },
    };
  },
  claims: {
    openid: ['sub', 'oid', 'tid', 'ver'],
    profile: ['name', 'preferred_username', 'oid', 'tid', 'ver'],
    email: ['email'],
  },
  // Put scope-requested claims into the ID Token even though an Access Token is issued too
  // (Entra puts them in the ID Token; the OIDC-conformant default would only expose them via
  // userinfo).
  conformIdTokenClaims: false,

  // Entra-shaped routes, relative to the issuer path /<tenant>/v2.0.
  routes: {
    authorization: '/oauth2/v2.0/authorize',
    token: '/oauth2/v2.0/token',
    jwks: '/discovery/v2.0/keys',
    end_session: '/oauth2/v2.0/logout',
    userinfo: '/oidc/userinfo',
  },

  features: {
    devInteractions: { enabled: false },
    // Entra advertises none of these; keep the discovery document close to Entra's.
    pushedAuthorizationRequests: { enabled: false },
    dPoP: { enabled: false },
    resourceIndicators: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // A plain form a scripted client can parse (action + hidden xsrf/logout inputs) and POST;
      // browsers auto-submit it.
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><title>Sign out</title></head><body>${
          form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')
        }<script>document.forms[0].submit()</script></body></html>`;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = '<!DOCTYPE html><html><body>signed out</body></html>';
      },
    },
  },

  interactions: {
    policy,
    // Served by our own node:http handler below, outside the provider mount.
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },

  // Plain http on 127.0.0.1: oidc-provider only marks cookies `secure` when the request is
  // https, so the default cookie options work. Keys make the cookies signed.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },

  // Explicit TTLs (also silences oidc-provider's "you SHOULD change" notices).
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 600,
    IdToken: 3600,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
    RefreshToken: 86400,
  },

  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1>error</h1>${
      Object.entries(out).map(([k, v]) => `<pre>${htmlEscape(k)}: ${htmlEscape(v)}</pre>`).join('')
    }</body></html>`;
  },
};

// ---------------------------------------------------------------------------------------------
// HTTP server: /<tenant>/v2.0/* -> provider (prefix stripped), /interaction/:uid -> auto sign-in.
// ---------------------------------------------------------------------------------------------
let provider; // created once the port is known (the issuer contains it)
let callback;

async function handleInteraction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;

    let accountId;
    if (prompt.name === 'login') {
      const user = byUpn(params.login_hint);
      if (!user) {
        res.writeHead(400, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(`<!DOCTYPE html><html><body>unknown user: ${htmlEscape(params.login_hint ?? '(no login_hint)')}</body></html>`);
        return;
      }
      accountId = user.sub;
      if (session?.accountId && session.accountId !== accountId) {
        // Switching users within one OP session. oidc-provider would bounce the browser through
        // an auto-submitting logout form (lib/actions/authorization/resume.js), which a plain
        // HTTP client cannot follow; instead drop the old OP session server-side and detach it
        // from this interaction, so the resume step simply starts a fresh session.
        await (await provider.Session.findByUid(session.uid))?.destroy();
        details.session = undefined;
        await details.persist();
      }
    } else if (prompt.name === 'consent') {
      accountId = session.accountId;
    } else {
      throw new Error(`unexpected prompt ${prompt.name}`);
    }

    // Consent to everything requested, in the same round trip as the login. Reuse the existing
    // grant only when it belongs to the same account.
    let grant;
    if (details.grantId && session?.accountId === accountId) {
      grant = await provider.Grant.find(details.grantId);
    }
    grant ??= new provider.Grant({ accountId, clientId: params.client_id });
    if (params.scope) grant.addOIDCScope(params.scope);
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();

    const result = { consent: { grantId } };
    if (prompt.name === 'login') {
      result.login = { accountId, amr: ['pwd'] };
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } catch (err) {
    console.error('interaction error:', err);
    const status = err instanceof errors.SessionNotFound ? 400 : 500;
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`interaction failed: ${err.message}\n`);
  }
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === PREFIX || path.startsWith(`${PREFIX}/`)) {
    // Mounting per oidc-provider's docs: keep the full URL in originalUrl (used to compute
    // absolute endpoint URLs) and hand the provider the path relative to the mount point.
    req.originalUrl = req.url;
    req.url = req.url.slice(PREFIX.length) || '/';
    callback(req, res);
    return;
  }
  if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(path)) {
    handleInteraction(req, res);
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const authority = `http://127.0.0.1:${port}`;
  const issuer = `${authority}${PREFIX}`;
  provider = new Provider(issuer, configuration);
  provider.on('server_error', (ctx, err) => console.error('server_error:', err));
  callback = provider.callback();
  process.stdout.write(`${JSON.stringify({ authority, issuer })}\n`);
  console.error(`oidc-provider (Entra look-alike) ready: ${issuer}`);
});

function shutdown(signal) {
  console.error(`received ${signal}, shutting down`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
