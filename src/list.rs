//! `joulerun list`: every energy interface, what each gives here, and why one does not.

use std::io;

use comfy_table::{Table, presets};
use serde::Serialize;

use crate::cli::{ListArgs, SourceArg};
use crate::error::{Error, Result};
use crate::run::{open_context, open_cpu_source};
use crate::sources::{self, Category, Domain, SourceKind, Unavailable};

pub const LIST_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Interface {
    pub category: Category,
    pub source: SourceKind,
    pub available: bool,
    pub domains: Vec<Domain>,
    pub problem: Option<Unavailable>,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub schema_version: u32,
    pub interfaces: Vec<Interface>,
    /// What `joulerun -- CMD` would use now.
    pub would_use: SourceKind,
    pub would_use_is_estimate: bool,
    /// Working interfaces that disagree on which domains exist.
    pub disagreements: Vec<String>,
    /// Every other category of devices: its interfaces, and which `auto` would use.
    pub categories: Vec<CategoryListing>,
}

#[derive(Debug, Serialize)]
pub struct CategoryListing {
    pub category: Category,
    /// The switch that picks its interface (`--gpu`, `--chassis`, ...).
    pub switch: String,
    pub interfaces: Vec<Interface>,
    /// What a run with `auto` would use; `None`: nothing to measure here.
    pub would_use: Option<SourceKind>,
}

fn interface(category: Category, kind: SourceKind, ctx: &sources::OpenContext) -> Interface {
    match sources::open_for(category, kind, ctx) {
        Ok(s) => Interface {
            category,
            source: kind,
            available: true,
            domains: s.domains().to_vec(),
            problem: None,
        },
        Err(u) => Interface {
            category,
            source: kind,
            available: false,
            domains: Vec::new(),
            problem: Some(u),
        },
    }
}

pub fn probe(ctx: &sources::OpenContext) -> Listing {
    let interfaces: Vec<Interface> = SourceKind::AUTO_ORDER
        .iter()
        .map(|&k| interface(Category::Cpu, k, ctx))
        .collect();
    let categories = Category::ALL
        .iter()
        .filter(|c| **c != Category::Cpu)
        .map(|&category| {
            let mut interfaces: Vec<Interface> = sources::interfaces(category)
                .iter()
                .map(|&k| interface(category, k, ctx))
                .collect();
            // Those that work first, then the others, each in the order `auto` tries them
            // (the chassis has four: what works here leads).
            interfaces.sort_by_key(|i| !i.available);
            CategoryListing {
                category,
                switch: format!("--{}", category.switch()),
                would_use: interfaces.iter().find(|i| i.available).map(|i| i.source),
                interfaces,
            }
        })
        .collect();
    let would_use = open_cpu_source(SourceArg::Auto, ctx)
        .map(|(s, _)| s.kind())
        .unwrap_or(SourceKind::Estimate);
    let mut disagreements = Vec::new();
    let measured: Vec<&Interface> = interfaces
        .iter()
        .filter(|i| i.available && i.source != SourceKind::Estimate)
        .collect();
    for (a, b) in measured.iter().zip(measured.iter().skip(1)) {
        let names = |i: &Interface| {
            let mut v: Vec<String> = i.domains.iter().map(|d| d.name.clone()).collect();
            v.sort();
            v
        };
        if names(a) != names(b) {
            disagreements.push(format!(
                "{} gives [{}] but {} gives [{}]",
                a.source,
                names(a).join(", "),
                b.source,
                names(b).join(", ")
            ));
        }
    }
    Listing {
        schema_version: LIST_SCHEMA_VERSION,
        interfaces,
        would_use,
        would_use_is_estimate: would_use == SourceKind::Estimate,
        disagreements,
        categories,
    }
}

fn status_and_detail(i: &Interface) -> (String, String) {
    match &i.problem {
        None => {
            let names: Vec<String> = i
                .domains
                .iter()
                .map(|d| crate::text::escape_line(&d.name).into_owned())
                .collect();
            let status = if i.source == SourceKind::Estimate {
                "model"
            } else {
                "ok"
            };
            (status.to_string(), names.join(", "))
        }
        Some(u) => {
            let status = match u.kind {
                sources::UnavailableKind::NotPresent => "absent",
                sources::UnavailableKind::Permission => "no access",
                sources::UnavailableKind::ModuleMissing => "no module",
                sources::UnavailableKind::Invalid => "invalid",
                sources::UnavailableKind::Inactive => "inactive",
            };
            let mut d = crate::text::escape_line(&u.reason).into_owned();
            if let Some(fix) = &u.fix {
                d.push_str("\nfix: ");
                d.push_str(&crate::text::escape_line(fix));
            }
            (status.to_string(), d)
        }
    }
}

fn push_table(out: &mut String, title: &str, interfaces: &[Interface]) {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(vec!["interface", "status", "domains / reason"]);
    for i in interfaces {
        let (status, detail) = status_and_detail(i);
        t.add_row(vec![i.source.name().to_string(), status, detail]);
    }
    out.push_str(title);
    for line in t.to_string().lines() {
        out.push(' ');
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
}

pub fn render(l: &Listing) -> String {
    let mut out = String::from("\nEnergy interfaces on this machine:\n\n");
    push_table(&mut out, " CPU (--source)\n", &l.interfaces);
    for c in &l.categories {
        push_table(
            &mut out,
            &format!(" {} ({})\n", c.category.title(), c.switch),
            &c.interfaces,
        );
    }
    for d in &l.disagreements {
        out.push_str(&format!(
            " note: the interfaces disagree: {}\n",
            crate::text::escape_line(d)
        ));
    }
    if l.would_use_is_estimate {
        out.push_str(
            " No energy counter can be read here (typical of a VM or a container without access).\n `joulerun -- CMD` would use: estimate (a CPU-utilisation model, labelled \"estimated\").\n",
        );
    } else {
        out.push_str(&format!(" `joulerun -- CMD` would use: {}\n", l.would_use));
    }
    let others: Vec<String> = l
        .categories
        .iter()
        .filter_map(|c| c.would_use.map(|k| format!("{k} for the {}", c.category)))
        .collect();
    if others.is_empty() {
        out.push_str(" and no GPU, chassis, battery or other power meter.\n\n");
    } else {
        out.push_str(&format!(" and {}.\n\n", others.join(", ")));
    }
    out
}

pub fn list(args: &ListArgs) -> Result<i32> {
    let common = crate::plan::common(&args.common, &crate::plan::process_env)?;
    let ctx = open_context(&common)?;
    // A duplicate of stdout, so that a closed stdout is an error rather than lost output.
    let stdout = crate::output::Requested {
        flag: "joulerun list",
        what: "the listing",
        dest: crate::output::Dest::Fd(1),
    };
    crate::output::check(std::slice::from_ref(&stdout), &[])?;
    let listing = probe(&ctx);
    let bytes = if args.json {
        let mut v = serde_json::to_vec_pretty(&listing)
            .map_err(|e| Error::failure(format!("cannot encode the listing: {e}")))?;
        v.push(b'\n');
        v
    } else {
        render(&listing).into_bytes()
    };
    let r = crate::output::prepare(&stdout)?.finish(&bytes, stdout.flag);
    match r {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::failure(format!("cannot write the listing: {e}"))),
    }
}
