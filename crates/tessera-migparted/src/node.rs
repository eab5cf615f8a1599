//! A YAML document as a tree of nodes that remember where they are in the file.
//!
//! mig-parted's format is validated by hand rather than by derived serde structs so that every
//! problem (an unknown field, a wrong type, a duplicate key) gets a message in mig-parted's terms
//! at the exact line and column. serde-saphyr parses the text; each node is read through
//! [`serde_saphyr::Spanned`] to keep its location.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DefaultMessageFormatter, DuplicateKeyPolicy, MessageFormatter, Options, Spanned};

use crate::error::Pos;

/// One YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Located>),
    /// Entries in file order; duplicates are kept so they can be reported.
    Map(Vec<(Key, Located)>),
}

/// A node with its location. For a value reached through an alias, `pos` is where the anchored
/// value is written (what to edit) and `used` is where the alias is.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub node: Node,
    pub pos: Pos,
    pub used: Pos,
}

/// A mapping key: always read as text (mig-parted's keys are strings; `123:` is "123").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub text: String,
    pub pos: Pos,
}

fn pos_of(loc: serde_saphyr::Location) -> Pos {
    Pos::new(u32::try_from(loc.line()).unwrap_or(u32::MAX), u32::try_from(loc.column()).unwrap_or(u32::MAX))
}

impl Node {
    /// A short description for messages: `the string 'abc'`, `the number -1`, `a list`.
    pub fn describe(&self) -> String {
        match self {
            Node::Null => "nothing (null)".to_string(),
            Node::Bool(b) => format!("the boolean {b}"),
            Node::Int(i) => format!("the number {i}"),
            Node::Float(x) => format!("the number {x}"),
            Node::Str(s) => format!("the string '{s}'"),
            Node::Seq(_) => "a list".to_string(),
            Node::Map(_) => "a mapping".to_string(),
        }
    }

    /// The text of a scalar, for places where mig-parted reads any scalar as text.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(x) => Some(x.to_string()),
            Node::Str(s) => Some(s.clone()),
            Node::Null | Node::Seq(_) | Node::Map(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Node> = Spanned::deserialize(d)?;
        Ok(Located { node: s.value, pos: pos_of(s.defined), used: pos_of(s.referenced) })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<String> = Spanned::deserialize(d)?;
        Ok(Key { text: s.value, pos: pos_of(s.defined) })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Located>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Key, Located>()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

/// Why the text is not a YAML document, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlProblem {
    pub pos: Pos,
    pub detail: String,
}

/// Parse the text into a tree.
pub fn load(text: &str) -> Result<Located, YamlProblem> {
    let mut options = Options::default();
    options.with_snippet = false;
    // Duplicates reach the tree and are reported with both locations.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // `010` stays text rather than becoming a float; mig-parted has no such numbers.
    options.leading_zero_numbers_as_strings = true;
    // A `~:` key is the text "~" (reported as an unknown name), not a type error.
    options.null_as_string = true;
    serde_saphyr::from_str_with_options::<Located>(text, options).map_err(|e| problem_of(&e))
}

fn problem_of(e: &serde_saphyr::Error) -> YamlProblem {
    let e = e.without_snippet();
    let pos = e.location().filter(|l| l.line() > 0 && l.column() > 0).map_or(Pos::START, pos_of);
    let detail = match e {
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "the file holds more than one YAML document ('---'); a mig-parted config is a single document".to_string()
        }
        serde_saphyr::Error::Unexpected { expected, .. } if expected.contains("string") => {
            "a mapping key must be a name, not a list or a mapping".to_string()
        }
        other => {
            let msg = DefaultMessageFormatter.format_message(other).into_owned();
            with_hint(msg)
        }
    };
    YamlProblem { pos, detail }
}

/// Parser messages are terse; add what usually causes them in a hand-written config.
fn with_hint(msg: String) -> String {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("tab") {
        format!("{msg} (YAML indentation must use spaces, not tabs)")
    } else if lower.contains("indentation")
        || lower.contains("mapping values are not allowed")
        || lower.contains("block")
    {
        format!("{msg} (check the indentation of this line and the one above)")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_keep_locations() {
        let root = load("a:\n  - 1\n  - x\nb: {c: true}\n").unwrap();
        let Node::Map(entries) = &root.node else { panic!("map expected") };
        assert_eq!(entries[0].0.text, "a");
        assert_eq!(entries[0].0.pos, Pos::new(1, 1));
        let Node::Seq(items) = &entries[0].1.node else { panic!("seq expected") };
        assert_eq!(items[0].node, Node::Int(1));
        assert_eq!(items[1].pos, Pos::new(3, 5));
        let Node::Map(inner) = &entries[1].1.node else { panic!("map expected") };
        assert_eq!(inner[0].1.node, Node::Bool(true));
    }

    #[test]
    fn keys_are_text_and_duplicates_kept() {
        let root = load("1: a\nyes: b\n1: c\n").unwrap();
        let Node::Map(entries) = &root.node else { panic!("map expected") };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.text.as_str()).collect();
        assert_eq!(keys, ["1", "yes", "1"]);
    }

    #[test]
    fn aliases_point_at_the_anchor() {
        let root = load("a: &x {k: 1}\nb: *x\n").unwrap();
        let Node::Map(entries) = &root.node else { panic!("map expected") };
        assert_eq!(entries[1].1.pos, Pos::new(1, 7));
        assert_eq!(entries[1].1.used, Pos::new(2, 4));
    }

    #[test]
    fn syntax_errors_have_locations() {
        let p = load("a:\n\t- b\n").unwrap_err();
        assert_eq!(p.pos.line, 2);
        assert!(p.detail.contains("tab"), "{}", p.detail);
    }
}
