//! The shapes of Kubernetes names (apimachinery's validation regexes), for the admission rules
//! that check label keys, label values and condition types.

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: the name part of a qualified name (label
/// and annotation keys, condition types), and a non-empty label value.
pub fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Matches the lowercase RFC 1123 subdomain regex
/// (`[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`), whatever its length.
pub fn is_dns_subdomain_shape(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_shapes() {
        for ok in ["a", "a.b-c_d", "A9"] {
            assert!(is_name_part(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b"] {
            assert!(!is_name_part(bad), "{bad}");
        }
        for ok in ["example.com", "a", "a-1.b"] {
            assert!(is_dns_subdomain_shape(ok), "{ok}");
        }
        for bad in ["", "Example.com", "a..b", "-a", "a_b"] {
            assert!(!is_dns_subdomain_shape(bad), "{bad}");
        }
    }
}
