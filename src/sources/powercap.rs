//! Placeholder: replaced by the real reader.

use super::{
    Domain, OpenContext, ReadError, Reading, Source, SourceKind, Unavailable, UnavailableKind,
};

pub struct PowercapSource {
    domains: Vec<Domain>,
}

impl PowercapSource {
    pub fn open(_ctx: &OpenContext) -> Result<PowercapSource, Unavailable> {
        Err(Unavailable::new(
            SourceKind::Powercap,
            UnavailableKind::NotPresent,
            "not implemented yet",
            None,
        ))
    }
}

impl Source for PowercapSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Powercap
    }
    fn domains(&self) -> &[Domain] {
        &self.domains
    }
    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
    }
}
