//! Placeholder: replaced by the real reader.

use super::{
    Domain, OpenContext, ReadError, Reading, Source, SourceKind, Unavailable, UnavailableKind,
};

pub struct MsrSource {
    domains: Vec<Domain>,
}

impl MsrSource {
    pub fn open(_ctx: &OpenContext) -> Result<MsrSource, Unavailable> {
        Err(Unavailable::new(
            SourceKind::Msr,
            UnavailableKind::NotPresent,
            "not implemented yet",
            None,
        ))
    }
}

impl Source for MsrSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Msr
    }
    fn domains(&self) -> &[Domain] {
        &self.domains
    }
    fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
        out.clear();
    }
}
