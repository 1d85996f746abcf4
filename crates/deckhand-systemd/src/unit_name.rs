//! Unit name validation, following systemd's `unit_name_is_valid()`.

use crate::{Error, Result};

#[cfg(test)]
use deckhand_model::unit_name::UNIT_NAME_MAX;

/// Validates a unit name by the rules of systemd.unit(5); see
/// [`deckhand_model::unit_name::check_unit_name`] for the rules.
///
/// # Errors
///
/// [`Error::InvalidUnitName`] saying which rule the name breaks.
pub fn validate_unit_name(name: &str) -> Result<()> {
    deckhand_model::unit_name::check_unit_name(name).map_err(|reason| Error::InvalidUnitName {
        name: name.to_owned(),
        reason,
    })
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
