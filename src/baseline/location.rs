//! Where the baseline file lives.

use std::ffi::OsString;
use std::path::PathBuf;

/// Environment variable naming the baseline file (the CLI's `--baseline FILE` wins).
pub const ENV_VAR: &str = "JOULERUN_BASELINE";

/// Where the baseline lives by default: `$JOULERUN_BASELINE` if set, else
/// `$XDG_STATE_HOME/joulerun/baseline.json` (an absolute `XDG_STATE_HOME` only, as the XDG
/// spec says), else `$HOME/.local/state/joulerun/baseline.json`; `None` with none of them.
pub fn default_path() -> Option<PathBuf> {
    path_from_env(|k| std::env::var_os(k))
}

/// [`default_path`] with the environment given as a function (for tests).
pub fn path_from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let get = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(p) = get(ENV_VAR) {
        return Some(PathBuf::from(p));
    }
    if let Some(state) = get("XDG_STATE_HOME").map(PathBuf::from)
        && state.is_absolute()
    {
        return Some(state.join("joulerun").join("baseline.json"));
    }
    get("HOME").map(|h| {
        PathBuf::from(h)
            .join(".local")
            .join("state")
            .join("joulerun")
            .join("baseline.json")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_rules() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            path_from_env(env(&[
                ("JOULERUN_BASELINE", "/tmp/b.json"),
                ("XDG_STATE_HOME", "/s"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/tmp/b.json"))
        );
        assert_eq!(
            path_from_env(env(&[
                ("JOULERUN_BASELINE", ""),
                ("XDG_STATE_HOME", "/s"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/s/joulerun/baseline.json"))
        );
        assert_eq!(
            path_from_env(env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/joulerun/baseline.json"))
        );
        assert_eq!(path_from_env(env(&[])), None);
    }
}
