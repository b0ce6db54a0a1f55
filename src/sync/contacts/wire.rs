//! The Graph shapes the contacts worker reads: Outlook contacts and contact folders. Only
//! the fields pbxgate uses are declared, and `SELECT` asks for no more.

use serde::Deserialize;

/// Graph contact fields read, and nothing more.
pub const SELECT: &str = "givenName,surname,displayName,companyName,department,jobTitle,businessPhones,homePhones,mobilePhone,emailAddresses,parentFolderId";

/// An Outlook contact as Graph returns it with `SELECT` (collections may come as null).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct GraphContact {
    pub id: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub company_name: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub business_phones: Option<Vec<String>>,
    pub home_phones: Option<Vec<String>>,
    pub mobile_phone: Option<String>,
    pub email_addresses: Option<Vec<EmailAddress>>,
    pub parent_folder_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EmailAddress {
    pub name: Option<String>,
    pub address: Option<String>,
}

/// A contact folder as `contactFolders` and `childFolders` list it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Folder {
    pub id: String,
    #[serde(default)]
    pub parent_folder_id: Option<String>,
}
