//! Graph contact → 3CX phonebook entry: the documented field mapping (README, "Contact
//! sync") and the tag that marks an entry as pbxgate's and says which contact(s) it is.

use super::wire::GraphContact;
use crate::config::DedupeBy;
use crate::pbx::{ContactFields, OWNED_TAG_PREFIX};
use crate::sync::users::normalize_phone;

fn text(v: &Option<String>) -> String {
    v.as_deref().unwrap_or("").trim().to_string()
}

fn phone(list: &Option<Vec<String>>, i: usize) -> String {
    list.as_ref()
        .and_then(|l| l.iter().filter(|p| !p.trim().is_empty()).nth(i))
        .map(|p| normalize_phone(p))
        .unwrap_or_default()
}

/// The documented mapping (README, "Contact sync"). `None` for a contact without any phone
/// number: a phonebook entry is for calling, so such contacts are left out.
pub fn to_fields(c: &GraphContact) -> Option<ContactFields> {
    let (mut first, last) = (text(&c.given_name), text(&c.surname));
    if first.is_empty() && last.is_empty() {
        first = text(&c.display_name);
    }
    let f = ContactFields {
        first_name: first,
        last_name: last,
        company_name: text(&c.company_name),
        department: text(&c.department),
        title: text(&c.job_title),
        email: c
            .email_addresses
            .iter()
            .flatten()
            .find_map(|e| {
                e.address
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
            })
            .unwrap_or("")
            .to_string(),
        phone_number: c
            .mobile_phone
            .as_deref()
            .map(normalize_phone)
            .unwrap_or_default(),
        business: phone(&c.business_phones, 0),
        business2: phone(&c.business_phones, 1),
        home: phone(&c.home_phones, 0),
        tag: String::new(),
    };
    let numbers = [&f.phone_number, &f.business, &f.business2, &f.home];
    numbers.iter().any(|n| !n.is_empty()).then_some(f)
}

/// The entry's tag: from the mailbox and contact id, or with `dedupe_by` from the first
/// e-mail address or phone number, so that the same person in two mailboxes is one entry.
pub fn tag_for(mailbox: &str, contact_id: &str, f: &ContactFields, dedupe: DedupeBy) -> String {
    let first_phone = [&f.business, &f.phone_number, &f.home]
        .into_iter()
        .find(|p| !p.is_empty());
    let key = match dedupe {
        DedupeBy::Email if !f.email.is_empty() => format!("email:{}", f.email.to_lowercase()),
        DedupeBy::Phone if first_phone.is_some() => {
            format!("phone:{}", first_phone.map(String::as_str).unwrap_or(""))
        }
        _ => format!("contact:{}/{contact_id}", mailbox.to_lowercase()),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    format!(
        "{OWNED_TAG_PREFIX}{}",
        crate::ids::hex(&digest.as_ref()[..8])
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sync::contacts::wire::EmailAddress;

    pub(in crate::sync::contacts) fn contact(
        id: &str,
        given: &str,
        mobile: Option<&str>,
    ) -> GraphContact {
        GraphContact {
            id: id.into(),
            given_name: Some(given.into()),
            surname: Some("Smith".into()),
            mobile_phone: mobile.map(Into::into),
            email_addresses: Some(vec![EmailAddress {
                name: None,
                address: Some(format!("{given}@example.com")),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn the_mapping_is_the_documented_one() {
        let c = GraphContact {
            id: "c1".into(),
            given_name: Some("Ann".into()),
            surname: Some("Lee".into()),
            company_name: Some("Fabrikam".into()),
            department: Some("Sales".into()),
            job_title: Some("Buyer".into()),
            business_phones: Some(vec![
                "+49 30 1".into(),
                "+49 30 2".into(),
                "+49 30 3".into(),
            ]),
            home_phones: Some(vec!["030 9".into()]),
            mobile_phone: Some("+49 (170) 5".into()),
            email_addresses: Some(vec![
                EmailAddress {
                    name: None,
                    address: Some("ann@fabrikam.com".into()),
                },
                EmailAddress {
                    name: None,
                    address: Some("ann@home.example".into()),
                },
            ]),
            ..Default::default()
        };
        let f = to_fields(&c).unwrap();
        assert_eq!(
            (
                f.first_name.as_str(),
                f.last_name.as_str(),
                f.company_name.as_str()
            ),
            ("Ann", "Lee", "Fabrikam")
        );
        assert_eq!(
            (f.department.as_str(), f.title.as_str()),
            ("Sales", "Buyer")
        );
        assert_eq!(
            (f.business.as_str(), f.business2.as_str()),
            ("+49301", "+49302")
        );
        assert_eq!(
            (f.phone_number.as_str(), f.home.as_str()),
            ("+491705", "0309")
        );
        assert_eq!(f.email, "ann@fabrikam.com");
        // No phone number: not a phonebook entry. Only a display name: it is the first name.
        assert!(to_fields(&contact("c2", "Bo", None)).is_none());
        let company = GraphContact {
            id: "c3".into(),
            display_name: Some("Contoso Hotline".into()),
            business_phones: Some(vec!["0800 1".into()]),
            ..Default::default()
        };
        assert_eq!(to_fields(&company).unwrap().first_name, "Contoso Hotline");
    }

    #[test]
    fn tags_are_stable_and_dedupe_merges_the_same_person() {
        let f = to_fields(&contact("c1", "Ann", Some("+49 1"))).unwrap();
        let a = tag_for("shared@x", "c1", &f, DedupeBy::None);
        assert!(a.starts_with(OWNED_TAG_PREFIX) && a.len() == OWNED_TAG_PREFIX.len() + 16);
        assert_eq!(a, tag_for("SHARED@x", "c1", &f, DedupeBy::None));
        assert_ne!(a, tag_for("other@x", "c1", &f, DedupeBy::None));
        assert_eq!(
            tag_for("shared@x", "c1", &f, DedupeBy::Email),
            tag_for("other@x", "c9", &f, DedupeBy::Email)
        );
        assert_eq!(
            tag_for("shared@x", "c1", &f, DedupeBy::Phone),
            tag_for("other@x", "c9", &f, DedupeBy::Phone)
        );
    }
}
