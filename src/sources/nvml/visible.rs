//! Which GPUs the command can use: `CUDA_VISIBLE_DEVICES` (or `--gpus`) resolved against
//! the GPUs NVML sees. Pure: tested without a library.
//!
//! CUDA's rules, as its documentation states them: a comma-separated list of integer
//! indices, `GPU-<uuid>` (a unique prefix of the uuid is enough) or `MIG-<uuid>` entries;
//! the first invalid entry (malformed, out of range, ambiguous, unknown, repeated) hides
//! itself and every entry after it; an empty value hides every GPU.
//!
//! Indices: CUDA numbers the devices by `CUDA_DEVICE_ORDER`, `FASTEST_FIRST` by default,
//! while NVML numbers them by PCI bus. joulerun takes an integer as the NVML index (the
//! order of `nvidia-smi`), the same as CUDA's with `CUDA_DEVICE_ORDER=PCI_BUS_ID`; on a
//! machine with different GPU models the two orders can differ, and the run says so
//! (uuids never have this problem). A MIG entry selects the GPU that holds the instance:
//! energy is only measured per physical GPU.

/// One entry of the list, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An integer index.
    Index(u32),
    /// `GPU-<uuid prefix>`, kept with its `GPU-`.
    Uuid(String),
    /// `MIG-<uuid prefix>` (or the older `MIG-GPU-<uuid>/<gi>/<ci>`).
    Mig(String),
}

/// What NVML says of one GPU, for resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuIdent {
    /// Its NVML index.
    pub index: u32,
    /// `GPU-...`.
    pub uuid: String,
    /// The uuids of its MIG instances (`MIG-...`), when MIG is on.
    pub mig: Vec<String>,
}

/// The selection: NVML indices in the order given, with whether each was named through a
/// MIG instance, and why the list stopped early, when it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected {
    pub gpus: Vec<(u32, bool)>,
    pub stopped: Option<String>,
    /// An integer index was used on a machine whose GPUs are not all the same model and
    /// `CUDA_DEVICE_ORDER` is not `PCI_BUS_ID`: CUDA's order may differ from NVML's.
    pub order_caveat: bool,
}

/// Parse one entry; `None`: malformed.
pub fn parse_entry(raw: &str) -> Option<Entry> {
    let e = raw.trim();
    if e.is_empty() {
        return None;
    }
    if let Some(rest) = strip_prefix_ci(e, "GPU-") {
        return uuid_like(rest).then(|| Entry::Uuid(format!("GPU-{}", rest.to_ascii_lowercase())));
    }
    if let Some(rest) = strip_prefix_ci(e, "MIG-") {
        return (!rest.is_empty())
            .then(|| Entry::Mig(format!("MIG-{}", rest.to_ascii_lowercase())));
    }
    // CUDA reads a leading integer; "1abc" is not a device.
    e.parse::<u32>().ok().map(Entry::Index)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn uuid_like(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Resolve `list` (the variable's value) against `gpus`.
/// `same_model`: every GPU is the same model; `pci_order`: `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
pub fn resolve(list: &str, gpus: &[GpuIdent], same_model: bool, pci_order: bool) -> Selected {
    let mut sel = Selected::default();
    if list.trim().is_empty() {
        sel.stopped = Some("it is empty: no GPU is visible to the command".to_string());
        return sel;
    }
    for raw in list.split(',') {
        let shown = crate::text::escape_line(raw.trim()).into_owned();
        let found = match parse_entry(raw) {
            None => Err(format!(
                "'{shown}' is not an index, GPU-<uuid> or MIG-<uuid>"
            )),
            Some(Entry::Index(i)) => match gpus.iter().find(|g| g.index == i) {
                Some(g) => {
                    if !same_model && !pci_order {
                        sel.order_caveat = true;
                    }
                    Ok((g.index, false))
                }
                None => Err(format!("index {i} is out of range ({} GPUs)", gpus.len())),
            },
            Some(Entry::Uuid(p)) => {
                let p = p.to_ascii_lowercase();
                let hits: Vec<&GpuIdent> = gpus
                    .iter()
                    .filter(|g| g.uuid.to_ascii_lowercase().starts_with(&p))
                    .collect();
                match hits.as_slice() {
                    [g] => Ok((g.index, false)),
                    [] => Err(format!("no GPU's uuid starts with '{shown}'")),
                    _ => Err(format!(
                        "'{shown}' is ambiguous ({} GPUs match)",
                        hits.len()
                    )),
                }
            }
            Some(Entry::Mig(p)) => {
                let p = p.to_ascii_lowercase();
                let hits: Vec<&GpuIdent> = gpus
                    .iter()
                    .filter(|g| {
                        g.mig.iter().any(|m| m.to_ascii_lowercase().starts_with(&p))
                            // The older form names the parent: MIG-GPU-<uuid>/gi/ci.
                            || p.strip_prefix("mig-").is_some_and(|rest| {
                                rest.starts_with("gpu-")
                                    && rest
                                        .split('/')
                                        .next()
                                        .is_some_and(|u| g.uuid.eq_ignore_ascii_case(u))
                            })
                    })
                    .collect();
                match hits.as_slice() {
                    [g] => Ok((g.index, true)),
                    [] => Err(format!("no MIG instance matches '{shown}'")),
                    _ => Err(format!(
                        "'{shown}' is ambiguous ({} GPUs match)",
                        hits.len()
                    )),
                }
            }
        };
        match found {
            Ok((i, mig)) if sel.gpus.iter().any(|g| g.0 == i) => {
                // Two MIG instances of one GPU select it once; a repeated GPU is invalid.
                if !mig {
                    sel.stopped = Some(format!("'{shown}' names a GPU already listed"));
                    break;
                }
            }
            Ok(g) => sel.gpus.push(g),
            Err(why) => {
                sel.stopped = Some(why);
                break;
            }
        }
    }
    sel
}

/// Check `--gpus` before anything is opened: `all`, or entries that parse. Returns the
/// list to resolve later (`None` for all).
pub fn check_gpus_flag(v: &str) -> Result<Option<String>, String> {
    if v.trim().eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    for raw in v.split(',') {
        if parse_entry(raw).is_none() {
            return Err(format!(
                "invalid --gpus entry '{}': use all, or a comma-separated list of NVML indices, GPU-<uuid> or MIG-<uuid>",
                crate::text::escape_line(raw.trim())
            ));
        }
    }
    Ok(Some(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<GpuIdent> {
        vec![
            GpuIdent {
                index: 0,
                uuid: "GPU-1a2b3c4d-0000-1111-2222-333344445555".into(),
                mig: vec![],
            },
            GpuIdent {
                index: 1,
                uuid: "GPU-1a2bffff-0000-1111-2222-333344445555".into(),
                mig: vec![
                    "MIG-aaaa0000-1111-2222-3333-444455556666".into(),
                    "MIG-bbbb0000-1111-2222-3333-444455556666".into(),
                ],
            },
            GpuIdent {
                index: 2,
                uuid: "GPU-99990000-0000-1111-2222-333344445555".into(),
                mig: vec![],
            },
        ]
    }

    fn pick(list: &str) -> Selected {
        resolve(list, &gpus(), true, false)
    }

    #[test]
    fn entries_parse_like_cuda() {
        assert_eq!(parse_entry(" 2 "), Some(Entry::Index(2)));
        assert_eq!(
            parse_entry("gpu-1A2B"),
            Some(Entry::Uuid("GPU-1a2b".into()))
        );
        assert_eq!(parse_entry("MIG-aa"), Some(Entry::Mig("MIG-aa".into())));
        for bad in ["", "-1", "1abc", "GPU-", "GPU-xyz", "MIG-", "cuda0"] {
            assert_eq!(parse_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn indices_select_in_the_order_given() {
        let s = pick("2,0");
        assert_eq!(s.gpus, [(2, false), (0, false)]);
        assert_eq!(s.stopped, None);
        assert!(!s.order_caveat);
        // Different models and no PCI order: the caveat is raised.
        assert!(resolve("0", &gpus(), false, false).order_caveat);
        assert!(!resolve("0", &gpus(), false, true).order_caveat);
    }

    #[test]
    fn an_invalid_entry_hides_itself_and_every_one_after_it() {
        let s = pick("0,7,2");
        assert_eq!(s.gpus, [(0, false)]);
        assert!(s.stopped.unwrap().contains("index 7 is out of range"));
        let s = pick("2,banana,0");
        assert_eq!(s.gpus, [(2, false)]);
        assert!(s.stopped.unwrap().contains("'banana' is not an index"));
        let s = pick("");
        assert!(s.gpus.is_empty());
        assert!(s.stopped.unwrap().contains("empty"));
        let s = pick("0,0,1");
        assert_eq!(s.gpus, [(0, false)]);
        assert!(s.stopped.unwrap().contains("already listed"));
    }

    #[test]
    fn uuid_prefixes_must_be_unique_and_known() {
        assert_eq!(pick("GPU-9999").gpus, [(2, false)]);
        assert_eq!(pick("GPU-1a2bf").gpus, [(1, false)]);
        let s = pick("GPU-1a2b,2");
        assert!(s.gpus.is_empty());
        assert!(s.stopped.unwrap().contains("ambiguous (2 GPUs match)"));
        let s = pick("2,GPU-ffff");
        assert_eq!(s.gpus, [(2, false)]);
        assert!(s.stopped.unwrap().contains("no GPU's uuid starts with"));
        // A full uuid, in upper case.
        assert_eq!(
            pick(
                "GPU-99990000-0000-1111-2222-333344445555"
                    .to_uppercase()
                    .as_str()
            )
            .gpus,
            [(2, false)]
        );
    }

    #[test]
    fn mig_instances_select_their_gpu_once() {
        let s = pick("MIG-bbbb,MIG-aaaa0000-1111-2222-3333-444455556666");
        assert_eq!(s.gpus, [(1, true)]);
        assert_eq!(s.stopped, None);
        let s = pick("MIG-GPU-99990000-0000-1111-2222-333344445555/1/0");
        assert_eq!(s.gpus, [(2, true)]);
        let s = pick("MIG-cccc");
        assert!(s.gpus.is_empty());
        assert!(s.stopped.unwrap().contains("no MIG instance"));
    }

    #[test]
    fn the_gpus_flag_is_checked_before_anything_opens() {
        assert_eq!(check_gpus_flag("all"), Ok(None));
        assert_eq!(check_gpus_flag("0,GPU-ab"), Ok(Some("0,GPU-ab".into())));
        let e = check_gpus_flag("0,,1").unwrap_err();
        assert!(e.contains("invalid --gpus entry ''"), "{e}");
        assert!(check_gpus_flag("first").is_err());
    }
}
