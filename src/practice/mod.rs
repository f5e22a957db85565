//! Subjunctive practice, pure domain code (no I/O): the exercise bank built
//! from hand-written sentence frames ([`bank`], [`frames`]) and spaced-
//! repetition scheduling, and the choice of new items ([`adaptive`]: recent
//! accuracy, weakest skills). Answer checking lives in
//! [`crate::spanish::checker`].

pub mod achievements;
pub mod adaptive;
pub mod bank;
pub mod frames;
pub mod scheduling;
pub mod settings;
