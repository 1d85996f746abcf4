//! Unit name validation, following systemd's `unit_name_is_valid()`.

use crate::{Error, Result};

/// Longest unit name systemd accepts, in bytes (`UNIT_NAME_MAX` is 256 with the NUL).
pub const UNIT_NAME_MAX: usize = 255;

/// Unit type suffixes systemd knows (systemd.unit(5)).
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// Validates a unit name by the rules of systemd.unit(5) (systemd's
/// `unit_name_is_valid()`):
///
/// - at most 255 bytes;
/// - a known type suffix after the last `.` (`.service`, `.socket`, `.target`,
///   `.device`, `.mount`, `.automount`, `.swap`, `.timer`, `.path`, `.slice`,
///   `.scope`);
/// - a non-empty prefix of `[A-Za-z0-9:_.\-]` and `@` (so no `/`, no spaces, no
///   shell metacharacters), not starting with `@`;
/// - a template name without an instance (`foo@.service`) is refused, because
///   it cannot be started or stopped; `foo@bar.service` is fine.
///
/// # Errors
///
/// [`Error::InvalidUnitName`] saying which rule the name breaks.
pub fn validate_unit_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidUnitName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > UNIT_NAME_MAX {
        return bad("it is longer than 255 bytes");
    }
    let Some((prefix, suffix)) = name.rsplit_once('.') else {
        return bad("it has no type suffix such as .service");
    };
    if !UNIT_TYPES.contains(&suffix) {
        return bad(
            "its suffix is not a unit type (service, socket, target, device, mount, \
             automount, swap, timer, path, slice, scope)",
        );
    }
    if prefix.is_empty() {
        return bad("it has nothing before the type suffix");
    }
    if let Some(c) = prefix
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(c)))
    {
        return bad(if c == '/' {
            "it contains '/'"
        } else {
            "it contains a character outside [A-Za-z0-9:_.\\@-]"
        });
    }
    match prefix.find('@') {
        Some(0) => bad("it starts with '@'"),
        Some(at) if at + 1 == prefix.len() => bad(
            "it is a template without an instance (foo@.service); name an instance such as foo@1.service",
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for name in [
            "etcd-member.service",
            "deckhand-agent.service",
            "docker.socket",
            "multi-user.target",
            "router@1.service",
            "router@a@b.service",
            "dev-sda1.device",
            "var-lib-docker.mount",
            "system-getty.slice",
            "x.timer",
            "a:b_c.d\\x2d.service",
        ] {
            assert!(validate_unit_name(name).is_ok(), "{name} should be valid");
        }
        let longest = format!("{}.service", "a".repeat(UNIT_NAME_MAX - ".service".len()));
        assert_eq!(longest.len(), 255);
        assert!(validate_unit_name(&longest).is_ok());
    }

    #[test]
    fn refuses_bad_names() {
        let too_long = format!("{}.service", "a".repeat(256 - ".service".len()));
        assert_eq!(too_long.len(), 256);
        for name in [
            "",
            "../x.service",
            "/etc/x.service",
            "a b.service",
            "x;rm.service",
            "x$(id).service",
            "noSuffix",
            "x.",
            "x.exe",
            ".service",
            "@x.service",
            "tmpl@.service",
            "tab\t.service",
            "ünï.service",
            too_long.as_str(),
        ] {
            let err = validate_unit_name(name).expect_err(name);
            assert!(
                matches!(err, Error::InvalidUnitName { .. }),
                "{name}: unexpected {err:?}"
            );
        }
    }

    #[test]
    fn error_names_the_rule() {
        let err = validate_unit_name("../x.service").expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "invalid unit name \"../x.service\": it contains '/' (see systemd.unit(5) for the rules)"
        );
    }
}
