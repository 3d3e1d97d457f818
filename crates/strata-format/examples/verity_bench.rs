//! Hash a file with strata's dm-verity writer, like `veritysetup format DATA HASH`.
//!
//! Usage: `verity_bench DATA HASH [SALT_HEX [UUID]]`. Prints the root hash. Used by
//! `bench/verity.sh` to compare against `veritysetup format` with the same salt and UUID.

use std::fs::File;
use std::io::BufWriter;
use std::process::ExitCode;

use strata_format::verity::{self, Params};

const DEFAULT_SALT: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const DEFAULT_UUID: &str = "12345678-9abc-4def-8123-456789abcdef";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, hash, rest @ ..] = args.as_slice() else {
        eprintln!("usage: verity_bench DATA HASH [SALT_HEX [UUID]]");
        return ExitCode::from(2);
    };
    match run(
        data,
        hash,
        rest.first().map_or(DEFAULT_SALT, String::as_str),
        rest.get(1).map_or(DEFAULT_UUID, String::as_str),
    ) {
        Ok(root) => {
            println!("{root}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("verity_bench: {e}");
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(data: &str, hash: &str, salt: &str, uuid: &str) -> Result<verity::RootHash, Box<dyn std::error::Error>> {
    let salt = hex_decode(salt).ok_or("salt is not an even-length hex string")?;
    let params = Params::new(salt, uuid.parse()?);
    let input = File::open(data)?;
    let size = input.metadata()?.len();
    let out = BufWriter::new(File::create(hash)?);
    Ok(verity::write_hash_tree(input, size, &params, out)?)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
