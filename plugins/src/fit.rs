//! Fitting a forwarded message body into a provider's payload limit.
//!
//! Both APNs and FCM cap a push at a few KiB. A long message body must not
//! cost the user their push: the phone still has to wake up, and its app
//! fetches the full message over XMPP anyway. So a body that does not fit is
//! cut on a character boundary and marked with `…`; only a payload that is
//! too large with no body at all is refused. Ciphertext (a Tigase server's
//! `tigase:push:encrypt:0`, fixture `tests/fixtures/tigase-encrypted.xml` in
//! the component) is never cut: it goes whole or not at all.

/// `s` cut to at most `max` bytes on a character boundary, ending in `…`
/// when anything was cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    const ELLIPSIS: char = '…';
    let mut end = max.saturating_sub(ELLIPSIS.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    out.push(ELLIPSIS);
    out
}

/// Renders with the longest prefix of `body` (at most its full length)
/// for which `render` fits; `render` gets the body (cut) and answers the
/// rendered bytes if they fit, or their size if not. The error is the size
/// of the smallest rendering tried.
pub(crate) fn longest_fitting(
    body: Option<&str>,
    render: impl Fn(Option<&str>) -> Result<Vec<u8>, usize>,
) -> Result<Vec<u8>, usize> {
    let Some(body) = body else {
        return render(None);
    };
    let attempt = |kept: usize| render(Some(&truncate(body, kept)));
    if let Ok(json) = attempt(body.len()) {
        return Ok(json);
    }
    // Escaping makes the rendered size grow unevenly with the body (a quote
    // costs two bytes, a control character six), so search for the longest
    // cut that fits: a dozen renders of a few KiB, only for huge bodies.
    let mut best = attempt(0)?;
    let (mut lo, mut hi) = (0, body.len());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match attempt(mid) {
            Ok(json) => {
                best = json;
                lo = mid;
            }
            Err(_) => hi = mid - 1,
        }
    }
    Ok(best)
}

/// A rendering that fits, and whether ciphertext had to be left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fitted {
    pub bytes: Vec<u8>,
    /// The size of the smallest rendering with the ciphertext, when even
    /// that was too large and the ciphertext was left out.
    pub ciphertext_dropped: Option<usize>,
}

/// Renders with the ciphertext (`render(true, body)`) when it fits with
/// some prefix of the body, else without it (`render(false, body)`).
/// Ciphertext is never cut: a cut ciphertext cannot be decrypted, while the
/// plain wake-up still makes the app fetch the message. The error is the
/// size of the smallest rendering without ciphertext.
pub(crate) fn with_optional_ciphertext(
    has_ciphertext: bool,
    body: Option<&str>,
    render: impl Fn(bool, Option<&str>) -> Result<Vec<u8>, usize>,
) -> Result<Fitted, usize> {
    let mut ciphertext_dropped = None;
    if has_ciphertext {
        match longest_fitting(body, |b| render(true, b)) {
            Ok(bytes) => {
                return Ok(Fitted {
                    bytes,
                    ciphertext_dropped: None,
                });
            }
            Err(size) => ciphertext_dropped = Some(size),
        }
    }
    let bytes = longest_fitting(body, |b| render(false, b))?;
    Ok(Fitted {
        bytes,
        ciphertext_dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_is_kept_whole_or_left_out() {
        let render = |ciphertext: String, limit: usize| {
            move |with: bool, b: Option<&str>| {
                let c = with.then_some(ciphertext.as_str());
                let out = serde_json::json!({ "b": b, "c": c })
                    .to_string()
                    .into_bytes();
                if out.len() <= limit {
                    Ok(out)
                } else {
                    Err(out.len())
                }
            }
        };
        // Fits: kept, the body cut around it.
        let fitted =
            with_optional_ciphertext(true, Some(&"x".repeat(100)), render("abc".into(), 50))
                .unwrap();
        assert_eq!(fitted.ciphertext_dropped, None);
        let v: serde_json::Value = serde_json::from_slice(&fitted.bytes).unwrap();
        assert_eq!(v["c"], "abc");
        assert!(v["b"].as_str().unwrap().ends_with('…'));
        // Too large: left out whole, never cut.
        let long = "z".repeat(60);
        let fitted = with_optional_ciphertext(true, Some("hi"), render(long.clone(), 50)).unwrap();
        assert!(fitted.ciphertext_dropped.is_some_and(|size| size > 50));
        let v: serde_json::Value = serde_json::from_slice(&fitted.bytes).unwrap();
        assert_eq!(v["c"], serde_json::Value::Null);
        assert_eq!(v["b"], "hi");
        // None to begin with: nothing dropped.
        let fitted = with_optional_ciphertext(false, None, render(long, 50)).unwrap();
        assert_eq!(fitted.ciphertext_dropped, None);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello", 4), "h…");
        assert_eq!(truncate("ééé", 5), "é…");
        assert_eq!(truncate("abc", 0), "…");
    }

    #[test]
    fn finds_the_longest_fit() {
        let render = |limit: usize| {
            move |b: Option<&str>| {
                let out = serde_json::json!({ "b": b }).to_string().into_bytes();
                if out.len() <= limit {
                    Ok(out)
                } else {
                    Err(out.len())
                }
            }
        };
        let body = "x".repeat(100);
        let fitted = longest_fitting(Some(&body), render(50)).unwrap();
        assert_eq!(fitted.len(), 50, "{}", String::from_utf8_lossy(&fitted));
        assert_eq!(
            longest_fitting(Some("hi"), render(50)).unwrap(),
            br#"{"b":"hi"}"#
        );
        assert_eq!(longest_fitting(None, render(50)).unwrap(), br#"{"b":null}"#);
        // `{"b":"…"}`: even the shortest cut is 11 bytes.
        assert_eq!(longest_fitting(Some(&body), render(5)), Err(11));
    }
}
