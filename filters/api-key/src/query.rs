//! Finding and removing a query parameter in a request target
//! (`/path?a=1&b=2`).
//!
//! Parameters are separated by `&`; a parameter's name and value are
//! separated by its first `=` (no `=`: an empty value). Names and values are
//! percent-decoded before use; a `%` not followed by two hexadecimal digits
//! is kept as is. `+` is kept as is too (it is not read as a space): keys are
//! often base64, where `+` is a digit.

/// The query of a request target: what follows the first `?`, if any.
pub fn query_of(target: &str) -> Option<&str> {
    target.split_once('?').map(|(_, query)| query)
}

/// The percent-decoded values of every parameter named `name` in `query`,
/// in order.
pub fn values(query: &str, name: &str) -> Vec<Vec<u8>> {
    pairs(query)
        .filter(|(raw_name, _)| percent_decode(raw_name) == name.as_bytes())
        .map(|(_, raw_value)| percent_decode(raw_value))
        .collect()
}

/// `target` without the parameters named `name`, or `None` when it has
/// none. The other parameters are kept byte for byte and in order; the `?`
/// goes when no parameter is left.
pub fn without(target: &str, name: &str) -> Option<String> {
    let (path, query) = target.split_once('?')?;
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|param| {
            let is_named = percent_decode(split_pair(param).0) == name.as_bytes();
            removed |= is_named;
            !is_named && !param.is_empty()
        })
        .collect();
    if !removed {
        return None;
    }
    let mut rebuilt = String::with_capacity(target.len());
    rebuilt.push_str(path);
    if !kept.is_empty() {
        rebuilt.push('?');
        rebuilt.push_str(&kept.join("&"));
    }
    Some(rebuilt)
}

/// The (raw name, raw value) of each non-empty parameter of `query`.
fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|param| !param.is_empty())
        .map(split_pair)
}

fn split_pair(param: &str) -> (&str, &str) {
    param.split_once('=').unwrap_or((param, ""))
}

/// Decodes `%XX` escapes; anything else, including a malformed escape, is
/// kept as is.
pub fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(high) = bytes.get(i + 1).and_then(|b| hex_value(*b))
            && let Some(low) = bytes.get(i + 2).and_then(|b| hex_value(*b))
        {
            decoded.push(high << 4 | low);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    decoded
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_what_follows_the_first_question_mark() {
        assert_eq!(query_of("/a"), None);
        assert_eq!(query_of("/a?"), Some(""));
        assert_eq!(query_of("/a?x=1?y"), Some("x=1?y"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("abc"), b"abc");
        assert_eq!(percent_decode("a%2Fb%2fc"), b"a/b/c");
        assert_eq!(percent_decode("%41%42"), b"AB");
        assert_eq!(percent_decode("a+b"), b"a+b", "+ is not a space");
        assert_eq!(percent_decode("%20"), b" ");
        assert_eq!(percent_decode("%e2%82%ac"), "€".as_bytes());
        assert_eq!(percent_decode("%FF"), [0xff], "bytes, not only UTF-8");
        // Malformed escapes stay literal.
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%4"), b"%4");
        assert_eq!(percent_decode("%zz%41"), b"%zzA");
        assert_eq!(percent_decode("%%41"), b"%A");
    }

    #[test]
    fn values_are_decoded_and_found_by_decoded_name() {
        let query = "a=1&api_key=k%2By%3D&b=2&api%5Fkey=second&api_keys=no&xapi_key=no";
        assert_eq!(
            values(query, "api_key"),
            [b"k+y=".to_vec(), b"second".to_vec()]
        );
        assert_eq!(values(query, "missing"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_value_keeps_everything_after_the_first_equals_sign() {
        assert_eq!(values("key=a=b==", "key"), [b"a=b==".to_vec()]);
    }

    #[test]
    fn a_parameter_without_value_has_an_empty_value() {
        assert_eq!(
            values("key&key=&x=1", "key"),
            [Vec::<u8>::new(), Vec::new()]
        );
        assert_eq!(values("&&", "key"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn without_keeps_other_parameters_verbatim_and_in_order() {
        assert_eq!(
            without("/p?a=1&api_key=s3cret&b=%20x+y&c", "api_key").as_deref(),
            Some("/p?a=1&b=%20x+y&c")
        );
        assert_eq!(
            without("/p?api_key=1&a=1&api%5fkey=2", "api_key").as_deref(),
            Some("/p?a=1")
        );
    }

    #[test]
    fn without_drops_the_question_mark_when_nothing_is_left() {
        assert_eq!(
            without("/p?api_key=s3cret", "api_key").as_deref(),
            Some("/p")
        );
        assert_eq!(
            without("/p?api_key=1&&api_key", "api_key").as_deref(),
            Some("/p")
        );
    }

    #[test]
    fn without_changes_nothing_when_the_parameter_is_absent() {
        assert_eq!(without("/p", "api_key"), None);
        assert_eq!(without("/p?", "api_key"), None);
        assert_eq!(without("/p?a=1&api_keys=2", "api_key"), None);
    }
}
