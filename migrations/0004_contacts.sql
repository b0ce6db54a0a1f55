-- The contacts worker: which 3CX phonebook entries pbxgate made from which Outlook contact
-- (only those are ever changed or deleted). Mailboxes it skips for a while are `sync_items`
-- (worker 'contacts', item 'skip:<mailbox>').
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
