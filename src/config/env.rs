//! The environment overlay: `PBXGATE__SECTION__KEY=value` variables set or replace keys of
//! the file before it is deserialized, so containers can configure pbxgate without a file
//! edit. Each key set this way is recorded in [`Origins`], so errors name the variable.
//!
//! A variable is typed like the file types its key: its text is kept as it is until
//! deserialization asks for a type (see [`EnvText`]). A string key takes the text verbatim,
//! so an extension `999` or a password `0123` stays a string; a number, boolean, list or
//! table key reads the text as a TOML value (`60`, `true`, `["10.0.0.0/8"]`,
//! `{ busy = "DND" }`). Guessing the type from the text alone, as the overlay once did,
//! cannot serve both.

use serde::de::{self, IntoDeserializer, Visitor};
use toml::map::Map;

use super::ENV_PREFIX;
use super::error::{ConfigError, Origins, env_origin};

type Error = toml::de::Error;

/// The config between the file and the typed [`Config`](super::Config): the file's values,
/// with variables' texts at the keys they set.
pub(super) enum Node {
    /// A section that a variable (or a secret file) reaches into.
    Table(Map<String, Node>),
    /// A value as the file wrote it, typed by TOML.
    File(toml::Value),
    /// A variable's text, typed when deserialization asks for a type.
    Env(String),
}

/// A leaf found by [`Node::text_at`].
pub(super) enum Leaf<'a> {
    Text(&'a str),
    Other,
}

impl Node {
    /// The sections below this node, opening a file table into nodes so keys can be set in it.
    fn table_mut(&mut self) -> Option<&mut Map<String, Node>> {
        if let Node::File(toml::Value::Table(t)) = self {
            let t = std::mem::take(t);
            *self = Node::Table(t.into_iter().map(|(k, v)| (k, Node::File(v))).collect());
        }
        match self {
            Node::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The leaf at `path` (section names, then the key): its text when it is a string or a
    /// variable, `Other` for any other value, `None` when the key is not set.
    pub(super) fn text_at(&self, path: &[&str]) -> Option<Leaf<'_>> {
        let Some((first, rest)) = path.split_first() else {
            return Some(match self {
                Node::Env(s) | Node::File(toml::Value::String(s)) => Leaf::Text(s),
                _ => Leaf::Other,
            });
        };
        match self {
            Node::Table(t) => t.get(*first)?.text_at(rest),
            Node::File(v) => {
                let v = rest.iter().try_fold(v.get(*first)?, |v, k| v.get(*k))?;
                Some(match v {
                    toml::Value::String(s) => Leaf::Text(s),
                    _ => Leaf::Other,
                })
            }
            Node::Env(_) => None,
        }
    }

    /// Sets `path` (section names, then the key) to `value`, creating missing sections.
    pub(super) fn insert(&mut self, path: &[&str], value: Node) -> Result<(), String> {
        let (last, sections) = path.split_last().ok_or("empty key")?;
        let mut cur = self.table_mut().ok_or("the config is not a table")?;
        for p in sections {
            let entry = cur
                .entry(p.to_string())
                .or_insert_with(|| Node::Table(Map::new()));
            cur = entry
                .table_mut()
                .ok_or_else(|| format!("`{p}` is not a section"))?;
        }
        cur.insert(last.to_string(), value);
        Ok(())
    }
}

/// Applies the `PBXGATE__SECTION__KEY=value` variables to the file's `table`, in name order
/// (so that a clash, e.g. `…__MAP` and `…__MAP__BUSY`, fails the same way every time).
pub(super) fn overlay_env(
    table: toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    origins: &mut Origins,
) -> Result<Node, ConfigError> {
    let mut root = Node::File(toml::Value::Table(table));
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(var, _)| var.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let parts: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let key = parts.join(".");
        let error = |message: String| ConfigError::Key {
            origin: env_origin(&var),
            key: key.clone(),
            message,
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(error("malformed name; use PBXGATE__SECTION__KEY".into()));
        }
        let path: Vec<&str> = parts.iter().map(String::as_str).collect();
        root.insert(&path, Node::Env(raw)).map_err(error)?;
        origins.set(&key, env_origin(&var));
    }
    Ok(root)
}

/// A table of nodes, read as a map (a section, or a struct-like value).
fn visit_table<'de, V: Visitor<'de>>(t: Map<String, Node>, visitor: V) -> Result<V::Value, Error> {
    visitor.visit_map(de::value::MapDeserializer::new(t.into_iter()))
}

impl<'de> IntoDeserializer<'de, Error> for Node {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Each method goes to the file's value or the variable's text, which know their types.
macro_rules! by_node {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            match self {
                Node::Table(t) => visit_table(t, visitor),
                Node::File(v) => v.$method($($arg,)* visitor),
                Node::Env(raw) => EnvText(raw).$method($($arg,)* visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = Error;

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::File(v) => v.deserialize_option(visitor),
            Node::Env(raw) => EnvText(raw).deserialize_option(visitor),
            table => visitor.visit_some(table),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Node::File(v) => v.deserialize_newtype_struct(name, visitor),
            Node::Env(raw) => EnvText(raw).deserialize_newtype_struct(name, visitor),
            table => visitor.visit_newtype_struct(table),
        }
    }

    by_node! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64();
        deserialize_u8(); deserialize_u16(); deserialize_u32(); deserialize_u64();
        deserialize_f32(); deserialize_f64();
        deserialize_char(); deserialize_str(); deserialize_string();
        deserialize_bytes(); deserialize_byte_buf();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
    }
}

/// A variable's text, typed by what deserialization asks for: verbatim for strings (and
/// names of enum variants), as a TOML value for numbers, booleans, lists and tables.
struct EnvText(String);

impl EnvText {
    /// The text as the TOML value it spells, when the key is not a string.
    fn typed(self) -> Result<toml::Value, Self> {
        self.0.parse().map_err(|_| self)
    }
}

/// Methods for keys the file would give a TOML number, boolean or the like: a text that is
/// no TOML value fails as a string would in the file ("invalid type: string …, expected u32").
macro_rules! typed {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            match self.typed() {
                Ok(v) => v.$method($($arg,)* visitor),
                Err(EnvText(raw)) => toml::Value::String(raw).$method($($arg,)* visitor),
            }
        }
    )*};
}

/// Methods for lists and tables: a text that is none names the syntax expected.
macro_rules! compound {
    ($what:literal: $($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Error> {
            match self.typed() {
                Ok(v) => v.$method($($arg,)* visitor),
                Err(EnvText(raw)) => Err(de::Error::custom(format!(
                    concat!("{:?} is not ", $what), raw
                ))),
            }
        }
    )*};
}

/// Methods for keys the file writes as strings: the text as it is.
macro_rules! verbatim {
    ($($method:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_string(self.0)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for EnvText {
    type Error = Error;

    /// No type asked for (e.g. an untagged enum): a TOML value if the text is one, else
    /// the text.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.typed() {
            Ok(v) => v.deserialize_any(visitor),
            Err(EnvText(raw)) => visitor.visit_string(raw),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A variant name as it is (`managed-password`); an inline table for a variant with data.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if self.0.trim_start().starts_with('{') {
            return self
                .typed_or_string()
                .deserialize_enum(name, variants, visitor);
        }
        visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(self.0))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    verbatim! {
        deserialize_char; deserialize_str; deserialize_string;
        deserialize_bytes; deserialize_byte_buf; deserialize_identifier;
    }

    typed! {
        deserialize_bool();
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64();
        deserialize_u8(); deserialize_u16(); deserialize_u32(); deserialize_u64();
        deserialize_f32(); deserialize_f64();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
    }

    compound! {
        "a TOML array like [\"a\", \"b\"]":
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
    }

    compound! {
        "a TOML inline table like {{ key = \"value\" }}":
        deserialize_map(); deserialize_struct(name: &'static str, fields: &'static [&'static str]);
    }
}

impl EnvText {
    fn typed_or_string(self) -> toml::Value {
        self.typed()
            .unwrap_or_else(|EnvText(raw)| toml::Value::String(raw))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    /// A type of each kind, to show the overlay is generic (the config has no float today).
    #[derive(Debug, Deserialize, PartialEq)]
    struct Sample {
        float: f64,
        port: u16,
        offset: i64,
        on: bool,
        text: String,
        digits: Option<String>,
        list: Vec<u32>,
        nested: Inner,
        tables: Vec<Inner>,
        map: BTreeMap<String, String>,
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        name: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        ManagedPassword,
    }

    fn sample(vars: &[(&str, &str)]) -> Result<Sample, String> {
        let mut origins = Origins::new("t.toml");
        let vars = vars
            .iter()
            .map(|(k, v)| (format!("PBXGATE__S__{k}"), v.to_string()));
        let root =
            overlay_env(toml::Table::new(), vars, &mut origins).map_err(|e| e.to_string())?;
        let Node::Table(mut t) = root else {
            unreachable!()
        };
        let s = t.remove("s").unwrap();
        serde_path_to_error::deserialize(s).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn every_kind_of_value_is_typed_like_the_file() {
        let s = sample(&[
            ("FLOAT", "0.25"),
            ("PORT", "8443"),
            ("OFFSET", "-3"),
            ("ON", "true"),
            ("TEXT", "0123"),
            ("DIGITS", "999"),
            ("LIST", "[1, 2]"),
            ("NESTED__NAME", "42"),
            ("TABLES", "[{ name = \"a\" }, { name = \"b\" }]"),
            ("MAP", "{ busy = \"DND\" }"),
            ("MODE", "managed-password"),
        ])
        .unwrap();
        assert_eq!(
            s,
            Sample {
                float: 0.25,
                port: 8443,
                offset: -3,
                on: true,
                text: "0123".into(),
                digits: Some("999".into()),
                list: vec![1, 2],
                nested: Inner { name: "42".into() },
                tables: vec![Inner { name: "a".into() }, Inner { name: "b".into() }],
                map: BTreeMap::from([("busy".into(), "DND".into())]),
                mode: Mode::ManagedPassword,
            }
        );
    }

    #[test]
    fn a_text_of_the_wrong_type_is_refused_with_the_type_expected() {
        let all = [
            ("FLOAT", "1"),
            ("PORT", "1"),
            ("OFFSET", "1"),
            ("ON", "false"),
            ("TEXT", "t"),
            ("DIGITS", "1"),
            ("LIST", "[]"),
            ("NESTED__NAME", "n"),
            ("TABLES", "[]"),
            ("MAP", "{}"),
            ("MODE", "managed-password"),
        ];
        let with = |key: &str, value: &str| {
            let vars: Vec<_> = all
                .iter()
                .map(|&(k, v)| (k, if k == key { value } else { v }))
                .collect();
            sample(&vars).expect_err(value)
        };
        assert!(sample(&all).is_ok());
        for (key, value, message) in [
            (
                "PORT",
                "many",
                "port: invalid type: string \"many\", expected u16",
            ),
            (
                "PORT",
                "70000",
                "port: invalid value: integer `70000`, expected u16",
            ),
            (
                "ON",
                "yes",
                "on: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "FLOAT",
                "half",
                "float: invalid type: string \"half\", expected f64",
            ),
            (
                "LIST",
                "1,2",
                "list: \"1,2\" is not a TOML array like [\"a\", \"b\"]",
            ),
            (
                "LIST",
                "[\"x\"]",
                "list[0]: invalid type: string \"x\", expected u32",
            ),
            (
                "MAP",
                "busy=DND",
                "map: \"busy=DND\" is not a TOML inline table like { key = \"value\" }",
            ),
            ("MODE", "other", "mode: unknown variant `other`"),
        ] {
            let e = with(key, value);
            assert!(e.starts_with(message), "{key}={value}: {e}");
        }
    }
}
