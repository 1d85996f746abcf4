//! Unit name validation, following systemd's `unit_name_is_valid()`
//! (<https://www.freedesktop.org/software/systemd/man/latest/systemd.unit.html>).
//! Pure, so plane configs are checked where they are parsed.

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
/// The rule the name breaks, in words (e.g. "it contains '/'").
pub fn check_unit_name(name: &str) -> Result<(), &'static str> {
    let bad = Err;
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
