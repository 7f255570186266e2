//! Label and field selectors, parsed the way apimachinery parses them, and the filter of a list
//! or watch request.

use serde_json::Value;

use super::kinds::{self, ResourceMeta};
use super::util::{ApiError, metadata};

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Gt(String, i64),
    Lt(String, i64),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector(Vec<LabelReq>);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Tok::Not);
                i += 1;
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1;
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n,()=!<>".contains(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {why} (labelSelector {s:?})"
            ))
        };
        let toks = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        let word = |i: usize| match toks.get(i) {
            Some(Tok::Word(w)) => Some(w.clone()),
            _ => None,
        };
        while i < toks.len() {
            if toks[i] == Tok::Not {
                let key = word(i + 1).ok_or_else(|| bad("expected a key after '!'"))?;
                reqs.push(LabelReq::NotExists(key));
                i += 2;
            } else {
                let key = word(i).ok_or_else(|| bad("expected a key"))?;
                i += 1;
                match toks.get(i) {
                    None | Some(Tok::Comma) => reqs.push(LabelReq::Exists(key)),
                    Some(op @ (Tok::Eq | Tok::DoubleEq | Tok::NotEq)) => {
                        let value = word(i + 1);
                        i += if value.is_some() { 2 } else { 1 };
                        let value = value.unwrap_or_default();
                        reqs.push(if *op == Tok::NotEq {
                            LabelReq::NotEquals(key, value)
                        } else {
                            LabelReq::Equals(key, value)
                        });
                    }
                    Some(op @ (Tok::Gt | Tok::Lt)) => {
                        let n = word(i + 1)
                            .and_then(|w| w.parse::<i64>().ok())
                            .ok_or_else(|| bad("expected an integer"))?;
                        i += 2;
                        reqs.push(if *op == Tok::Gt {
                            LabelReq::Gt(key, n)
                        } else {
                            LabelReq::Lt(key, n)
                        });
                    }
                    Some(Tok::Word(w)) if w == "in" || w == "notin" => {
                        let negate = w == "notin";
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return Err(bad("expected '('"));
                        }
                        i += 1;
                        let mut values = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                Some(Tok::Comma) => i += 1,
                                Some(Tok::Word(v)) => {
                                    values.push(v.clone());
                                    i += 1;
                                }
                                _ => return Err(bad("expected a value or ')'")),
                            }
                        }
                        reqs.push(if negate {
                            LabelReq::NotIn(key, values)
                        } else {
                            LabelReq::In(key, values)
                        });
                    }
                    Some(_) => return Err(bad("unexpected operator")),
                }
            }
            match toks.get(i) {
                None => {}
                Some(Tok::Comma) => {
                    i += 1;
                    if i == toks.len() {
                        return Err(bad("trailing ','"));
                    }
                }
                Some(_) => return Err(bad("expected ','")),
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels = metadata(obj)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldReq {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(pub Vec<FieldReq>);

/// Splits on unescaped `sep`, keeping escapes for the next stage.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

impl FieldSelector {
    pub fn parse(meta: &ResourceMeta, s: &str) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for term in split_unescaped(s, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !kinds::supported_field(meta, field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push(FieldReq {
                field: field.to_owned(),
                value: unescape(value.trim()),
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, meta: &ResourceMeta, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|r| (kinds::field_value(meta, obj, &r.field) == r.value) != r.negate)
    }
}

/// What a list or watch request selects: namespace, labels and fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn new(
        meta: &ResourceMeta,
        namespace: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Filter, ApiError> {
        Ok(Filter {
            namespace: namespace.map(str::to_owned),
            labels: labels
                .map(LabelSelector::parse)
                .transpose()?
                .unwrap_or_default(),
            fields: fields
                .map(|f| FieldSelector::parse(meta, f))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub fn matches(&self, meta: &ResourceMeta, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && super::util::meta_str(obj, "namespace") != ns
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(meta, obj)
    }

    pub fn is_trivial(&self) -> bool {
        self.labels.is_empty() && self.fields.0.is_empty()
    }

    /// The `(field, value)` a watcher is indexed by, so that events only reach the watchers
    /// they can match (apiserver's "indexed triggers", e.g. `spec.nodeName` of pods).
    pub fn index_key(&self) -> Option<(String, String)> {
        self.fields
            .0
            .iter()
            .find(|r| !r.negate)
            .map(|r| (r.field.clone(), r.value.clone()))
            .or_else(|| {
                self.namespace
                    .as_ref()
                    .map(|ns| ("metadata.namespace".to_owned(), ns.clone()))
            })
    }
}
