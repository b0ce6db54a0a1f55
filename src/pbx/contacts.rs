//! 3CX phonebooks: the company phonebook (`/xapi/v1/Contacts`, documented) and a user's
//! personal phonebook (not documented; see [`Book::caller`]).

use serde::{Deserialize, Serialize};

use super::{Caller, PbxClient, PbxError, decode, odata_string};

/// Every entry pbxgate creates carries a `Tag` starting with this, so that it never touches
/// an entry it did not make.
pub const OWNED_TAG_PREFIX: &str = "pbxgate:";

/// Fields read from `/Contacts` (always an explicit `$select`).
const CONTACT_FIELDS: &str = "Id,FirstName,LastName,CompanyName,Department,Title,Email,PhoneNumber,Business,Business2,Home,Tag";

/// A phonebook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Book {
    /// 3CX's company phonebook.
    Company,
    /// The personal phonebook of the extension with this number.
    Personal(String),
}

impl Book {
    /// The name kept in the store: `company` or the extension number.
    pub fn key(&self) -> String {
        match self {
            Self::Company => "company".into(),
            Self::Personal(ext) => ext.clone(),
        }
    }

    pub fn from_key(key: &str) -> Self {
        match key {
            "company" => Self::Company,
            ext => Self::Personal(ext.to_string()),
        }
    }
}

impl std::fmt::Display for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Company => f.write_str("company phonebook"),
            Self::Personal(ext) => write!(f, "phonebook of {ext}"),
        }
    }
}

/// The fields of a `Pbx.Contact` that the contact sync owns. Always sent whole: an empty
/// string clears a field in 3CX, so a value removed in Outlook goes away in 3CX too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContactFields {
    pub first_name: String,
    pub last_name: String,
    pub company_name: String,
    pub department: String,
    pub title: String,
    pub email: String,
    /// What the 3CX UI calls "Mobile".
    pub phone_number: String,
    pub business: String,
    pub business2: String,
    pub home: String,
    pub tag: String,
}

/// A phonebook entry as 3CX returns it (3CX omits nulls, hence the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PbxContact {
    #[serde(rename = "Id")]
    pub id: i64,
    #[serde(flatten)]
    pub fields: ContactFields,
}

impl Book {
    /// Who calls 3CX for `self`.
    ///
    /// UNDOCUMENTED for `Book::Personal`: the XAPI description has no call that creates or
    /// lists one user's personal contacts. pbxgate calls the same `/xapi/v1/Contacts` with a
    /// token impersonating the extension (see [`PbxClient::impersonate`]), assuming 3CX scopes
    /// the collection to the caller's personal phonebook as it scopes `MyUser`. Not verified
    /// against a live PBX; `[sync.contacts] personal` is off by default for that reason.
    fn caller(&self) -> Caller<'_> {
        match self {
            Self::Company => Caller::ApiClient,
            Self::Personal(ext) => Caller::Extension(ext),
        }
    }
}

impl PbxClient {
    /// The entries of `book` whose `Tag` starts with `tag_prefix` (pbxgate's own), every page.
    pub async fn contacts(
        &self,
        book: &Book,
        tag_prefix: &str,
    ) -> Result<Vec<PbxContact>, PbxError> {
        let filter = format!("startswith(Tag,{})", odata_string(tag_prefix));
        let path = "/xapi/v1/Contacts";
        self.pages(book.caller(), path, CONTACT_FIELDS, Some(&filter))
            .await
    }

    /// `POST /Contacts`: a new entry in `book`.
    pub async fn create_contact(
        &self,
        book: &Book,
        fields: &ContactFields,
    ) -> Result<PbxContact, PbxError> {
        let res = self
            .send_xapi(
                book.caller(),
                reqwest::Method::POST,
                "/xapi/v1/Contacts",
                |r| r.json(fields),
            )
            .await?;
        decode(res, "created contact").await
    }

    /// `PATCH /Contacts({id})` with every owned field.
    pub async fn update_contact(
        &self,
        book: &Book,
        id: i64,
        fields: &ContactFields,
    ) -> Result<(), PbxError> {
        let path = format!("/xapi/v1/Contacts({id})");
        self.send_xapi(book.caller(), reqwest::Method::PATCH, &path, |r| {
            r.json(fields)
        })
        .await
        .map(|_| ())
    }

    /// `DELETE /Contacts({id})`.
    pub async fn delete_contact(&self, book: &Book, id: i64) -> Result<(), PbxError> {
        let path = format!("/xapi/v1/Contacts({id})");
        self.send_xapi(book.caller(), reqwest::Method::DELETE, &path, |r| r)
            .await
            .map(|_| ())
    }
}
