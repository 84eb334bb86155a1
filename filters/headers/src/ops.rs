//! The operations on one message's headers, and the order they run in.

use std::borrow::Cow;

use crate::template::{Template, Var, invalid_value_char};

/// The headers of a request or response, as the operations see them.
///
/// Names given to it are lower-case and valid; values given to `set` and
/// `append` are valid header values.
pub trait Headers {
    /// Every value of `name`, in order.
    fn get_all(&self, name: &str) -> Vec<String>;
    /// Whether `name` is present.
    fn contains(&self, name: &str) -> bool;
    /// Replaces every value of `name` with `value`.
    fn set(&self, name: &str, value: &str);
    /// Adds a value to `name`.
    fn append(&self, name: &str, value: &str);
    /// Removes every value of `name`.
    fn remove(&self, name: &str);
}

/// The checked operations of one section (`request` or `response`). Names
/// are lower-case; each list is in name order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ops {
    /// Headers removed.
    pub remove: Vec<String>,
    /// (from, to): the values of `from` move to `to`, replacing it.
    pub rename: Vec<(String, String)>,
    /// Headers set, replacing their values.
    pub set: Vec<(String, Template)>,
    /// Headers set only when absent (after the operations before).
    pub set_if_absent: Vec<(String, Template)>,
    /// Headers given one more value.
    pub add: Vec<(String, Template)>,
}

/// An operation skipped because its value rendered invalid for HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `set`, `set_if_absent` or `add`.
    pub op: &'static str,
    /// The header.
    pub name: String,
    /// The offending character.
    pub bad: char,
}

impl Ops {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.set_if_absent.is_empty()
            && self.add.is_empty()
    }

    /// Every variable the templates use.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.set
            .iter()
            .chain(&self.set_if_absent)
            .chain(&self.add)
            .flat_map(|(_, template)| template.vars())
    }

    /// Runs the operations on `headers`: remove, rename, set, set_if_absent,
    /// add. Every template is rendered first, with `lookup`, so variables
    /// see the message as it was before any of these operations. Returns the
    /// operations skipped because their value rendered invalid.
    pub fn apply(
        &self,
        headers: &impl Headers,
        mut lookup: impl FnMut(&Var) -> String,
    ) -> Vec<Skipped> {
        if self.vars().next().is_none() {
            // Nothing to render: every value is a literal, checked when the
            // config loaded, and no list of values is made.
            self.run(
                headers,
                self.set.iter().map(|(_, t)| t.literal()),
                self.set_if_absent.iter().map(|(_, t)| t.literal()),
                self.add.iter().map(|(_, t)| t.literal()),
            );
            return Vec::new();
        }
        let mut skipped = Vec::new();
        let set = render("set", &self.set, &mut lookup, &mut skipped);
        let set_if_absent = render(
            "set_if_absent",
            &self.set_if_absent,
            &mut lookup,
            &mut skipped,
        );
        let add = render("add", &self.add, &mut lookup, &mut skipped);
        self.run(
            headers,
            set.iter().map(|v| v.as_deref()),
            set_if_absent.iter().map(|v| v.as_deref()),
            add.iter().map(|v| v.as_deref()),
        );
        skipped
    }

    /// Runs the operations with the values of `set`, `set_if_absent` and
    /// `add` (`None`: skipped).
    fn run<'v>(
        &self,
        headers: &impl Headers,
        set: impl Iterator<Item = Option<&'v str>>,
        set_if_absent: impl Iterator<Item = Option<&'v str>>,
        add: impl Iterator<Item = Option<&'v str>>,
    ) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (from, to) in &self.rename {
            let values = headers.get_all(from);
            if values.is_empty() {
                continue;
            }
            headers.remove(from);
            headers.remove(to);
            for value in &values {
                headers.append(to, value);
            }
        }
        for ((name, _), value) in self.set.iter().zip(set) {
            if let Some(value) = value {
                headers.set(name, value);
            }
        }
        for ((name, _), value) in self.set_if_absent.iter().zip(set_if_absent) {
            if let Some(value) = value
                && !headers.contains(name)
            {
                headers.set(name, value);
            }
        }
        for ((name, _), value) in self.add.iter().zip(add) {
            if let Some(value) = value {
                headers.append(name, value);
            }
        }
    }
}

/// The values of `list`'s operations (`op`), rendered with `lookup`; `None`
/// for a value invalid for HTTP, reported in `skipped`.
fn render<'a>(
    op: &'static str,
    list: &'a [(String, Template)],
    lookup: &mut impl FnMut(&Var) -> String,
    skipped: &mut Vec<Skipped>,
) -> Vec<Option<Cow<'a, str>>> {
    list.iter()
        .map(|(name, template)| {
            // A template without variables is checked when the config
            // loads, and needs no string of its own.
            if let Some(text) = template.literal() {
                return Some(Cow::Borrowed(text));
            }
            let value = template.render(&mut *lookup);
            match invalid_value_char(&value) {
                None => Some(Cow::Owned(value)),
                Some(bad) => {
                    skipped.push(Skipped {
                        op,
                        name: name.clone(),
                        bad,
                    });
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    // The operations on a real request and response, through the filter's
    // phases, are in `phase_tests`.

    use super::*;
    use crate::template::Side;

    fn t(text: &str) -> Template {
        Template::parse(text, Side::Request).unwrap()
    }

    #[test]
    fn vars_lists_every_template_variable() {
        let ops = Ops {
            set: vec![("a".into(), t("%ROUTE%"))],
            set_if_absent: vec![("b".into(), t("%START_TIME%"))],
            add: vec![("c".into(), t("%REQ(x)% %PATH%"))],
            ..Ops::default()
        };
        let vars: Vec<&Var> = ops.vars().collect();
        assert_eq!(
            vars,
            [
                &Var::Route,
                &Var::StartTime,
                &Var::Req("x".into()),
                &Var::Path
            ]
        );
        assert!(!ops.is_empty());
        assert!(Ops::default().is_empty());
    }
}
