//! The config loader: any text gives a config or an error naming the key, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = mailgate::config::Config::parse(text);
});
