//! The keys table of `docs/configuration.md` against the config file's
//! keys, the daemon's flags and the real defaults.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use lanshare::cli::Cli;

use super::markdown::{only_code, parse_markdown, table_after};
use super::read;

/// The names of a struct's fields as serde sees them (what a config file
/// may set), read from the derive's `deserialize_struct` call.
fn serde_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor, value};

    struct Introspect<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Introspect<'_> {
        type Error = value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, value::Error> {
            Err(value::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, value::Error> {
            *self.0 = fields;
            Err(value::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

#[test]
fn config_keys_table_matches_the_config_file_and_the_flags() {
    use lanshare::config::{Config, Env, FileConfig};

    let text = read(Path::new("docs/configuration.md"));
    let rows = table_after(&text, "## Keys and flags");
    let documented: Vec<&str> = rows.iter().map(|r| only_code(&r[0]).unwrap()).collect();
    let keys = serde_fields::<FileConfig>();
    assert!(keys.len() > 10, "introspection found only {keys:?}");
    let keys: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(
        documented.iter().copied().collect::<BTreeSet<_>>(),
        keys,
        "docs/configuration.md: the keys table must list exactly the config file's keys"
    );

    // Flags: each one documented exists on `share daemon` (or globally),
    // and every daemon flag but --config is in the table.
    let mut cmd = Cli::command();
    cmd.build();
    let daemon = cmd.find_subcommand("daemon").unwrap();
    let flags: BTreeSet<String> = daemon
        .get_arguments()
        .chain(cmd.get_arguments())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|f| !["--help", "--version", "--config"].contains(&f.as_str()))
        .collect();
    let mut in_table = BTreeSet::new();
    for row in &rows {
        for word in row[3].split(|c: char| c == '`' || c == ',' || c.is_whitespace()) {
            if word.starts_with("--") {
                assert!(flags.contains(word), "{}: no flag {word}", row[0]);
                in_table.insert(word.to_owned());
            }
        }
    }
    assert_eq!(
        in_table, flags,
        "every daemon flag belongs in the keys table"
    );

    // Defaults written as a value: setting the key to it changes nothing.
    let env = Env {
        home: Some("/home/u".into()),
        xdg_runtime_dir: Some("/run/user/1000".into()),
        uid: 1000,
        ..Env::default()
    };
    let default = format!(
        "{:?}",
        Config::resolve(FileConfig::default(), &env).unwrap()
    );
    let mut checked = 0;
    for row in &rows {
        let (key, cell) = (only_code(&row[0]).unwrap(), &row[2]);
        let Some(value) = only_code(cell) else {
            continue;
        };
        let file: FileConfig = toml::from_str(&format!("{key} = {value}"))
            .unwrap_or_else(|e| panic!("{key}: default {value} is not a valid value: {e}"));
        let set = format!("{:?}", Config::resolve(file, &env).unwrap());
        assert_eq!(set, default, "{key}: the default is not {value}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} defaults checked");

    // The example file is valid.
    let md = parse_markdown(&text);
    for (info, lines) in md.blocks.iter().filter(|(info, _)| info == "toml") {
        toml::from_str::<FileConfig>(&lines.join("\n"))
            .unwrap_or_else(|e| panic!("docs/configuration.md: invalid {info} example: {e}"));
    }
}
