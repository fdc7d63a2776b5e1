//! The static baseline calibrated by `joulerun --basepower`: its file, its location and
//! whether it fits this machine.
//!
//! PLACEHOLDER SIGNATURES: the implementation fills these in.
