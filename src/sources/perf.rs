//! Placeholder: replaced by the real reader.

use super::{
    Domain, OpenContext, ReadError, Reading, Source, SourceKind, Unavailable, UnavailableKind,
};

pub struct PerfSource {
    domains: Vec<Domain>,
}

impl PerfSource {
    pub fn open(_ctx: &OpenContext) -> Result<PerfSource, Unavailable> {
        Err(Unavailable::new(
            SourceKind::Perf,
            UnavailableKind::NotPresent,
            "not implemented yet",
            None,
        ))
    }
}

impl Source for PerfSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Perf
    }
    fn domains(&self) -> &[Domain] {
        &self.domains
    }
    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
    }
}
