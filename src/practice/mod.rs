//! Subjunctive practice, pure domain code (no I/O): the exercise bank built
//! from hand-written sentence frames ([`bank`], [`frames`]) and spaced-
//! repetition scheduling. Answer checking lives in [`crate::spanish::checker`].

pub mod bank;
pub mod frames;
pub mod scheduling;
