//! The operations on one message's headers, and the order they run in.

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
        let mut skipped = Vec::new();
        let mut render = |op, list: &[(String, Template)]| -> Vec<Option<String>> {
            list.iter()
                .map(|(name, template)| {
                    let value = template.render(&mut lookup);
                    match invalid_value_char(&value) {
                        None => Some(value),
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
        };
        let set = render("set", &self.set);
        let set_if_absent = render("set_if_absent", &self.set_if_absent);
        let add = render("add", &self.add);

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
                headers.set(name, &value);
            }
        }
        for ((name, _), value) in self.set_if_absent.iter().zip(set_if_absent) {
            if let Some(value) = value
                && !headers.contains(name)
            {
                headers.set(name, &value);
            }
        }
        for ((name, _), value) in self.add.iter().zip(add) {
            if let Some(value) = value {
                headers.append(name, &value);
            }
        }
        skipped
    }
}

#[cfg(test)]
pub mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::template::Side;

    /// Headers in a list of (name, value), like an HTTP message.
    #[derive(Debug, Default)]
    pub struct FakeHeaders(pub RefCell<Vec<(String, String)>>);

    impl FakeHeaders {
        pub fn of(pairs: &[(&str, &str)]) -> FakeHeaders {
            FakeHeaders(RefCell::new(
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            ))
        }

        pub fn pairs(&self) -> Vec<(String, String)> {
            self.0.borrow().clone()
        }
    }

    impl Headers for FakeHeaders {
        fn get_all(&self, name: &str) -> Vec<String> {
            let list = self.0.borrow();
            list.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect()
        }

        fn contains(&self, name: &str) -> bool {
            self.0.borrow().iter().any(|(n, _)| n == name)
        }

        fn set(&self, name: &str, value: &str) {
            self.remove(name);
            self.append(name, value);
        }

        fn append(&self, name: &str, value: &str) {
            self.0.borrow_mut().push((name.into(), value.into()));
        }

        fn remove(&self, name: &str) {
            self.0.borrow_mut().retain(|(n, _)| n != name);
        }
    }

    fn t(text: &str) -> Template {
        Template::parse(text, Side::Request).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn no_vars(var: &Var) -> String {
        panic!("unexpected lookup of {var}")
    }

    #[test]
    fn each_operation_alone() {
        let h = FakeHeaders::of(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let ops = Ops {
            remove: vec!["a".into()],
            ..Ops::default()
        };
        assert!(ops.apply(&h, no_vars).is_empty());
        assert_eq!(h.pairs(), pairs(&[("b", "2")]));

        let h = FakeHeaders::of(&[("a", "1"), ("b", "2"), ("a", "3")]);
        let ops = Ops {
            set: vec![("a".into(), t("new"))],
            ..Ops::default()
        };
        ops.apply(&h, no_vars);
        assert_eq!(h.pairs(), pairs(&[("b", "2"), ("a", "new")]));

        let h = FakeHeaders::of(&[("a", "1")]);
        let ops = Ops {
            add: vec![("a".into(), t("2")), ("c".into(), t("3"))],
            ..Ops::default()
        };
        ops.apply(&h, no_vars);
        assert_eq!(h.pairs(), pairs(&[("a", "1"), ("a", "2"), ("c", "3")]));
    }

    #[test]
    fn rename_moves_every_value_and_replaces_the_target() {
        let h = FakeHeaders::of(&[("old", "1"), ("new", "stale"), ("old", "2"), ("x", "y")]);
        let ops = Ops {
            rename: vec![("old".into(), "new".into())],
            ..Ops::default()
        };
        ops.apply(&h, no_vars);
        assert_eq!(h.pairs(), pairs(&[("x", "y"), ("new", "1"), ("new", "2")]));
    }

    #[test]
    fn renaming_an_absent_header_changes_nothing() {
        let h = FakeHeaders::of(&[("new", "kept")]);
        let ops = Ops {
            rename: vec![("old".into(), "new".into())],
            ..Ops::default()
        };
        ops.apply(&h, no_vars);
        assert_eq!(h.pairs(), pairs(&[("new", "kept")]));
    }

    #[test]
    fn set_if_absent_only_sets_missing_headers() {
        let h = FakeHeaders::of(&[("present", "client")]);
        let ops = Ops {
            set_if_absent: vec![
                ("missing".into(), t("default")),
                ("present".into(), t("default")),
            ],
            ..Ops::default()
        };
        ops.apply(&h, no_vars);
        assert_eq!(
            h.pairs(),
            pairs(&[("present", "client"), ("missing", "default")])
        );
    }

    #[test]
    fn operations_run_in_order_remove_rename_set_set_if_absent_add() {
        // remove then rename: the removed header is gone before the rename.
        // rename then set_if_absent: the renamed header counts as present.
        // set then add: the added value follows the set one.
        let h = FakeHeaders::of(&[("gone", "1"), ("from", "v"), ("s", "client")]);
        let ops = Ops {
            remove: vec!["gone".into()],
            rename: vec![("from".into(), "to".into())],
            set: vec![("s".into(), t("set"))],
            set_if_absent: vec![("to".into(), t("default")), ("fresh".into(), t("d"))],
            add: vec![("s".into(), t("added")), ("gone".into(), t("back"))],
        };
        assert!(ops.apply(&h, no_vars).is_empty());
        assert_eq!(
            h.pairs(),
            pairs(&[
                ("to", "v"),
                ("s", "set"),
                ("fresh", "d"),
                ("s", "added"),
                ("gone", "back"),
            ])
        );
    }

    #[test]
    fn variables_see_the_headers_before_the_operations() {
        // Copy x-a to x-b, then remove x-a: a move.
        let h = FakeHeaders::of(&[("x-a", "value")]);
        let ops = Ops {
            remove: vec!["x-a".into()],
            set: vec![("x-b".into(), t("copied:%REQ(x-a)%"))],
            ..Ops::default()
        };
        ops.apply(&h, |var| match var {
            Var::Req(name) => h.get_all(name).join(", "),
            other => panic!("{other:?}"),
        });
        assert_eq!(h.pairs(), pairs(&[("x-b", "copied:value")]));
    }

    #[test]
    fn an_invalid_rendered_value_is_skipped_and_reported() {
        let h = FakeHeaders::of(&[]);
        let ops = Ops {
            set: vec![("bad".into(), t("%ROUTE%")), ("good".into(), t("ok"))],
            add: vec![("bad2".into(), t("x%ROUTE%"))],
            ..Ops::default()
        };
        let skipped = ops.apply(&h, |_| "line\nbreak".into());
        assert_eq!(h.pairs(), pairs(&[("good", "ok")]));
        assert_eq!(
            skipped,
            [
                Skipped {
                    op: "set",
                    name: "bad".into(),
                    bad: '\n'
                },
                Skipped {
                    op: "add",
                    name: "bad2".into(),
                    bad: '\n'
                },
            ]
        );
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
