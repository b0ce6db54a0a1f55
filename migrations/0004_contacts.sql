-- The contacts worker: which 3CX phonebook entries pbxgate made from which Outlook contact
-- (only those are ever changed or deleted), and mailboxes left alone for a while because they
-- have no Exchange Online mailbox or an access policy blocks them.
CREATE TABLE contact_links (
    book       TEXT NOT NULL,      -- 'company', or the extension number of a personal phonebook
    mailbox    TEXT NOT NULL,      -- the source mailbox: object id or UPN as configured
    contact_id TEXT NOT NULL,      -- the Outlook contact id
    folder_id  TEXT NOT NULL,
    tag        TEXT NOT NULL,      -- the Tag of the 3CX entry, 'pbxgate:…'
    pbx_id     BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (book, mailbox, contact_id)
);
CREATE INDEX contact_links_tag ON contact_links (book, tag);

CREATE TABLE contact_mailbox_skips (
    mailbox    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    retry_at   BIGINT NOT NULL
);
