//! The console's texts in English and German, side by side in one catalogue, picked by the
//! browser's `Accept-Language` (the product's users are largely German-speaking).

use http::HeaderMap;

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

impl Lang {
    /// The preferred of English and German by `Accept-Language` (highest `q`; the first
    /// listed on a tie); English when neither is named.
    pub fn of(headers: &HeaderMap) -> Self {
        let header = headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut fields = part.split(';');
            let tag = fields.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = fields
                .filter_map(|f| f.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "de" => Lang::De,
                "en" => Lang::En,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    pub fn t(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::De => &DE,
        }
    }
}

macro_rules! catalogue {
    ($($key:ident: $en:literal, $de:literal;)*) => {
        /// Every text of the console, one field per message.
        pub struct Texts { $(pub $key: &'static str,)* }
        const EN: Texts = Texts { $($key: $en,)* };
        const DE: Texts = Texts { $($key: $de,)* };
    };
}

catalogue! {
    console: "pbxgate admin console", "pbxgate-Verwaltung";
    overview: "Overview", "Übersicht";
    sync: "Sync", "Synchronisierung";
    directory: "Directory", "Verzeichnis";
    sessions: "Sessions", "Sitzungen";
    audit: "Audit log", "Protokoll";
    signed_in_as: "Signed in as", "Angemeldet als";
    installation: "Installation status", "Installationsstatus";
    check_now: "Check now", "Jetzt prüfen";
    not_checked: "No check has run yet. Press “Check now”.", "Noch keine Prüfung gelaufen. „Jetzt prüfen“ drücken.";
    checked_at: "Checked at", "Geprüft um";
    status_pass: "OK", "OK";
    status_warn: "Attention", "Achtung";
    status_fail: "Failed", "Fehler";
    status_skip: "Not checked", "Nicht geprüft";
    fix: "What to do", "Was zu tun ist";
    consent: "Grant the missing permissions (admin consent)", "Fehlende Berechtigungen erteilen (Administratorzustimmung)";
    version: "Version", "Version";
    uptime: "Running since", "Läuft seit";
    replicas: "Replicas seen (last 5 minutes)", "Aktive Instanzen (letzte 5 Minuten)";
    replica: "Replica", "Instanz";
    started: "Started", "Gestartet";
    last_seen: "Last seen", "Zuletzt gesehen";
    worker: "Worker", "Dienst";
    enabled: "enabled", "aktiv";
    disabled: "disabled", "inaktiv";
    schedule: "Schedule", "Zeitplan";
    every: "every", "alle";
    full_daily_at: "full run daily at", "Vollabgleich täglich um";
    next_run: "Next run", "Nächster Lauf";
    last_runs: "Last runs", "Letzte Läufe";
    took: "Took", "Dauer";
    mode: "Mode", "Art";
    status: "Status", "Status";
    planned: "Planned", "Geplant";
    applied: "Applied", "Ausgeführt";
    errors: "Errors", "Fehler";
    no_runs: "No runs yet.", "Noch keine Läufe.";
    dry_run: "Dry run", "Probelauf";
    run_now: "Run now", "Jetzt ausführen";
    dry_run_title: "Dry run: what a run would do now (nothing was changed)", "Probelauf: was ein Lauf jetzt täte (nichts wurde geändert)";
    action: "Action", "Aktion";
    item: "Item", "Eintrag";
    detail: "Detail", "Details";
    nothing_to_do: "Nothing to do.", "Nichts zu tun.";
    busy: "Another run of this worker is under way; try again when it has finished.", "Ein anderer Lauf dieses Dienstes ist im Gang; später erneut versuchen.";
    run_failed: "The run failed", "Der Lauf ist fehlgeschlagen";
    run_started: "The run was started and goes on in the background.", "Der Lauf wurde gestartet und läuft im Hintergrund weiter.";
    run_done: "The run has finished.", "Der Lauf ist beendet.";
    search: "Search", "Suchen";
    search_hint: "Name, UPN or extension", "Name, UPN oder Nebenstelle";
    user: "User", "Benutzer";
    extension: "Extension", "Nebenstelle";
    matched_by: "Matched by", "Zugeordnet durch";
    last_sign_in: "Last sign-in", "Letzte Anmeldung";
    never: "never", "nie";
    source_sync: "user sync", "Benutzer-Synchronisierung";
    source_match: "e-mail match", "E-Mail-Abgleich";
    source_override: "override", "feste Zuordnung";
    source_sign_in: "provisioned at sign-in", "bei Anmeldung angelegt";
    removed: "removed in Entra", "in Entra entfernt";
    no_users: "No user matches.", "Kein Benutzer gefunden.";
    overrides: "Overrides", "Feste Zuordnungen";
    overrides_help: "A fixed UPN → extension assignment; it wins over the sync and the e-mail match at the next sign-in.", "Eine feste Zuordnung UPN → Nebenstelle; sie gilt vor Synchronisierung und E-Mail-Abgleich ab der nächsten Anmeldung.";
    from_config: "from the config file (read-only)", "aus der Konfigurationsdatei (nur lesbar)";
    added_by: "Added by", "Angelegt von";
    add: "Add", "Hinzufügen";
    remove: "Remove", "Entfernen";
    override_added: "The override was saved.", "Die Zuordnung wurde gespeichert.";
    override_removed: "The override was removed.", "Die Zuordnung wurde entfernt.";
    override_invalid: "Give a UPN (user@domain) and an extension number.", "UPN (benutzer@domain) und Nebenstellennummer angeben.";
    override_no_extension: "3CX has no such extension.", "Diese Nebenstelle gibt es in 3CX nicht.";
    no_overrides: "No overrides.", "Keine festen Zuordnungen.";
    session_started: "Started", "Beginn";
    last_use: "Last use", "Letzte Nutzung";
    client: "Client address", "Client-Adresse";
    user_agent: "Browser", "Browser";
    admin: "admin", "Admin";
    revoke: "Sign out", "Abmelden";
    revoke_all: "Sign out everywhere", "Überall abmelden";
    revoked: "The session was ended, and the 3CX access behind it.", "Die Sitzung wurde beendet, samt dem 3CX-Zugang dahinter.";
    revoked_all: "Every session of the user was ended, and the 3CX access behind them.", "Alle Sitzungen des Benutzers wurden beendet, samt dem 3CX-Zugang dahinter.";
    revoke_failed: "Ending the session failed; see the log.", "Beenden der Sitzung fehlgeschlagen; siehe Log.";
    no_sessions: "No active sessions.", "Keine aktiven Sitzungen.";
    checked: "The check has run.", "Die Prüfung ist gelaufen.";
    when: "When", "Wann";
    who: "Who", "Wer";
    what: "What", "Was";
    target: "Target", "Ziel";
    outcome: "Outcome", "Ergebnis";
    no_audit: "No admin actions yet.", "Noch keine Admin-Aktionen.";
    forbidden_title: "Admins only", "Nur für Administratoren";
    forbidden: "The admin console is for members of the admin groups. Your account is not in one.", "Die Verwaltung ist Mitgliedern der Administratorgruppen vorbehalten. Ihr Konto ist in keiner.";
    cross_site_title: "Request refused", "Anfrage abgelehnt";
    cross_site: "This change did not come from the admin console itself and was not made.", "Diese Änderung kam nicht aus der Verwaltung selbst und wurde nicht ausgeführt.";
    reference: "If you contact your IT department, give them this reference", "Wenn Sie sich an Ihre IT-Abteilung wenden, nennen Sie diese Referenz";
    store_error: "The store could not be read or written; see the log.", "Der Speicher war nicht les- oder schreibbar; siehe Log.";
}

/// The console's title for a doctor check, by its stable id; `None` leaves the English
/// title the check carries. (Ids as the doctor names them; one the doctor adds later falls
/// back to its English title.)
pub fn check_title(lang: Lang, id: &str) -> Option<&'static str> {
    if lang == Lang::En {
        return None;
    }
    Some(match id {
        "entra.discovery" => "Entra ID: Discovery erreichbar",
        "entra.credential" => "Entra ID: Client-Geheimnis oder Zertifikat funktioniert",
        "entra.expiry" => "Entra ID: Ablauf von Geheimnis oder Zertifikat",
        "entra.clock" => "Entra ID: Uhrzeitabweichung",
        "graph.roles" => "Graph: Anwendungsberechtigungen",
        "graph.users" => "Graph: Benutzer lesbar",
        "graph.presence" => "Graph: Kalender lesbar",
        "graph.contacts" => "Graph: Kontakte lesbar",
        "graph.groups" => "Graph: Gruppenmitgliedschaften lesbar",
        "pbx.reachable" => "3CX: erreichbar",
        "pbx.tls" => "3CX: TLS-Zertifikat vertrauenswürdig",
        "pbx.api" => "3CX: API-Client erhält Token und liest Benutzer",
        "pbx.version" => "3CX: Version und Lizenz",
        "pbx.session" => "3CX: Anmeldung für Benutzersitzungen",
        "store.reachable" => "Speicher: erreichbar",
        "store.migrations" => "Speicher: Migrationen aktuell",
        "store.writable" => "Speicher: beschreibbar",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(v: &str) -> Lang {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_LANGUAGE, v.parse().unwrap());
        Lang::of(&h)
    }

    #[test]
    fn accept_language_picks_by_weight_and_order() {
        assert_eq!(lang("de-DE,de;q=0.9,en;q=0.8"), Lang::De);
        assert_eq!(lang("en-US,en;q=0.9,de;q=0.8"), Lang::En);
        assert_eq!(lang("fr;q=1, en;q=0.5, de;q=0.7"), Lang::De);
        assert_eq!(lang("de;q=0, en;q=0.1"), Lang::En);
        assert_eq!(lang("fr"), Lang::En);
        assert_eq!(Lang::of(&HeaderMap::new()), Lang::En);
    }
}
