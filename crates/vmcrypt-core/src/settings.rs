//! The settings codec for VMX files, VMDK descriptors, vmcrypt sidecars and keystores: lines of
//! `key = "value"`, comments and (in descriptors) extent lines.
//!
//! A rewrite changes only the lines whose values were set or removed: unknown lines, comments,
//! ordering, spacing, quoting and line endings survive byte for byte. Keys compare
//! case-insensitively, as VMware does; a key given twice is refused, since which one wins would
//! be a guess.

use std::path::Path;

use crate::{Error, Result};

/// Settings files larger than this are not settings files.
pub const MAX_SIZE: usize = 1024 * 1024;

/// Which kind of file is being read: it decides which extra lines are allowed and how new
/// entries are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flavor {
    /// `.vmx`, sidecar and keystore files: new entries as `key = "value"`.
    Vmx,
    /// A VMDK descriptor: extent lines are allowed; new entries as `key="value"`.
    Descriptor,
}

#[derive(Debug, Clone)]
struct Line {
    text: String,
    eol: &'static str,
    entry: Option<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    /// Byte range of the value within `text` (inside the quotes when quoted).
    start: usize,
    end: usize,
}

/// A parsed settings file.
#[derive(Debug, Clone)]
pub struct Settings {
    lines: Vec<Line>,
    flavor: Flavor,
    /// The file's length when it was NUL padded (descriptors QEMU rewrote are padded to a
    /// 512-byte block): a rewrite pads again to this length.
    padded_len: Option<usize>,
}

impl Settings {
    /// Parses settings text. `path` only names the file in errors.
    ///
    /// # Errors
    /// [`Error::InvalidSettings`] naming the first bad line.
    pub fn parse(bytes: &[u8], flavor: Flavor, path: &Path) -> Result<Self> {
        if bytes.len() > MAX_SIZE {
            return Err(Error::settings(
                path,
                None,
                format!("larger than {MAX_SIZE} bytes; not a settings file"),
            ));
        }
        // QEMU writes a descriptor as a C string in a NUL-padded 512-byte block (after
        // `qemu-img convert`, and whenever it updates the CID on a write) and reads it back up to
        // the first NUL. Its CID is written without leading zeros, so a rewrite can shorten the
        // text and leave the old text's last bytes after the NUL (seen: `...\"\n\0\n\0\0...`).
        // So, as QEMU does: the text ends at the first NUL; the rest is padding.
        let mut padded_len = None;
        let mut bytes = bytes;
        if flavor == Flavor::Descriptor
            && let Some(end) = bytes.iter().position(|b| *b == 0)
        {
            padded_len = Some(bytes.len());
            bytes = &bytes[..end];
        }
        if bytes.contains(&0) {
            return Err(Error::settings(
                path,
                None,
                "binary data; not a settings file",
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::settings(path, None, "not UTF-8 text; not a settings file"))?;
        let mut lines = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut rest = text;
        let mut n = 0;
        while !rest.is_empty() {
            n += 1;
            let (raw, eol, next) = match rest.find('\n') {
                Some(i) if i > 0 && rest.as_bytes()[i - 1] == b'\r' => {
                    (&rest[..i - 1], "\r\n", &rest[i + 1..])
                }
                Some(i) => (&rest[..i], "\n", &rest[i + 1..]),
                None => (rest, "", ""),
            };
            rest = next;
            let entry = parse_line(raw, flavor).map_err(|r| Error::settings(path, Some(n), r))?;
            if let Some(e) = &entry
                && !seen.insert(e.key.to_ascii_lowercase())
            {
                return Err(Error::settings(
                    path,
                    Some(n),
                    format!("key {:?} appears twice", e.key),
                ));
            }
            lines.push(Line {
                text: raw.to_string(),
                eol,
                entry,
            });
        }
        Ok(Settings {
            lines,
            flavor,
            padded_len,
        })
    }

    /// An empty file of the given flavor, starting with comment lines.
    pub fn new(flavor: Flavor, comments: &[&str]) -> Self {
        let lines = comments
            .iter()
            .map(|c| Line {
                text: format!("# {c}"),
                eol: "\n",
                entry: None,
            })
            .collect();
        Settings {
            lines,
            flavor,
            padded_len: None,
        }
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::InvalidSettings`].
    pub fn read(path: &Path, flavor: Flavor) -> Result<Self> {
        // Non-blocking, regular files only, never more than the cap (a FIFO or /dev/zero
        // beside an image is an error at once, not a hang or an exhausted memory).
        let bytes = match crate::fsutil::read_bounded(path, MAX_SIZE) {
            Err(Error::InvalidInput { reason }) => return Err(Error::settings(path, None, reason)),
            other => other?,
        };
        Settings::parse(&bytes, flavor, path)
    }

    /// The value of a key (case-insensitive), without quotes.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|i| {
            let l = &self.lines[i];
            let e = l.entry.as_ref().expect("find returns entry lines");
            &l.text[e.start..e.end]
        })
    }

    /// All entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| {
            l.entry
                .as_ref()
                .map(|e| (e.key.as_str(), &l.text[e.start..e.end]))
        })
    }

    /// Sets a value: rewrites only the value of an existing line, or appends a new line.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a key or value that cannot be written safely.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !valid_key(key) {
            return Err(Error::input(format!("invalid settings key {key:?}")));
        }
        if value.chars().any(|c| c == '"' || c.is_control()) {
            return Err(Error::input(format!(
                "value for {key:?} contains a quote or control character"
            )));
        }
        if let Some(i) = self.find(key) {
            let l = &mut self.lines[i];
            let e = l.entry.as_mut().expect("find returns entry lines");
            l.text.replace_range(e.start..e.end, value);
            e.end = e.start + value.len();
            return Ok(());
        }
        let eol = self
            .lines
            .first()
            .map(|l| l.eol)
            .filter(|e| !e.is_empty())
            .unwrap_or("\n");
        if let Some(last) = self.lines.last_mut()
            && last.eol.is_empty()
        {
            last.eol = eol;
        }
        // Descriptors write header keys as `key="value"` and disk-database keys as
        // `ddb.key = "value"`, as VMware and qemu-img do.
        let spaced = self.flavor == Flavor::Vmx || key.to_ascii_lowercase().starts_with("ddb.");
        let prefix = if spaced {
            format!("{key} = \"")
        } else {
            format!("{key}=\"")
        };
        let start = prefix.len();
        self.lines.push(Line {
            text: format!("{prefix}{value}\""),
            eol,
            entry: Some(Entry {
                key: key.to_string(),
                start,
                end: start + value.len(),
            }),
        });
        Ok(())
    }

    /// Removes a key's line. Returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.find(key) {
            Some(i) => {
                self.lines.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes every key that starts with `prefix` (case-insensitive).
    pub fn remove_prefix(&mut self, prefix: &str) {
        let p = prefix.to_ascii_lowercase();
        self.lines.retain(|l| {
            !l.entry
                .as_ref()
                .is_some_and(|e| e.key.to_ascii_lowercase().starts_with(&p))
        });
    }

    /// Lines that are not entries, comments or blank (extent lines of a descriptor), with their
    /// index for [`Settings::replace_line`].
    pub fn other_lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.lines.iter().enumerate().filter_map(|(i, l)| {
            let t = l.text.trim();
            (l.entry.is_none() && !t.is_empty() && !t.starts_with('#'))
                .then_some((i, l.text.as_str()))
        })
    }

    /// Replaces a non-entry line (e.g. an extent line) by new text.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the index is not a non-entry line or the text is not one line.
    pub fn replace_line(&mut self, index: usize, text: &str) -> Result<()> {
        match self.lines.get_mut(index) {
            Some(l) if l.entry.is_none() && !text.contains(['\n', '\r']) => {
                l.text = text.to_string();
                Ok(())
            }
            _ => Err(Error::input("cannot replace that settings line")),
        }
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// The key of line `i`, if that line is an entry.
    pub fn line_key(&self, i: usize) -> Option<&str> {
        self.lines
            .get(i)
            .and_then(|l| l.entry.as_ref())
            .map(|e| e.key.as_str())
    }

    /// Removes line `i` and returns its text and line ending (`"\n"`, `"\r\n"` or `""`).
    pub fn take_line(&mut self, i: usize) -> Option<(String, &'static str)> {
        (i < self.lines.len()).then(|| {
            let l = self.lines.remove(i);
            (l.text, l.eol)
        })
    }

    /// Inserts a raw line at index `i` (at most the line count), parsed like the file's lines.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if it is not a valid line, repeats a key or the index is past
    /// the end.
    pub fn insert_line(&mut self, i: usize, text: &str, eol: &str) -> Result<()> {
        let eol: &'static str = match eol {
            "\n" => "\n",
            "\r\n" => "\r\n",
            "" => "",
            _ => return Err(Error::input("invalid line ending")),
        };
        if i > self.lines.len() || text.contains(['\n', '\r']) {
            return Err(Error::input("cannot insert that settings line"));
        }
        let entry = parse_line(text, self.flavor).map_err(Error::input)?;
        if let Some(e) = &entry
            && self.find(&e.key).is_some()
        {
            return Err(Error::input(format!("key {:?} is already set", e.key)));
        }
        self.lines.insert(
            i,
            Line {
                text: text.to_string(),
                eol,
                entry,
            },
        );
        Ok(())
    }

    /// Whether the last line ends with a line ending (an empty file counts as yes).
    pub fn ends_with_newline(&self) -> bool {
        self.lines.last().is_none_or(|l| !l.eol.is_empty())
    }

    /// Removes the line ending of the last line.
    pub fn strip_final_newline(&mut self) {
        if let Some(l) = self.lines.last_mut() {
            l.eol = "";
        }
    }

    /// Checks that the file, grown by `extra` bytes, still fits the reader's cap: a job checks
    /// this before it starts, so that no rewrite can make a file vmcrypt itself refuses.
    ///
    /// # Errors
    /// [`Error::InvalidSettings`] naming the cap.
    pub fn check_room(&self, path: &Path, extra: usize) -> Result<()> {
        let len = self.render().len();
        if len.saturating_add(extra) > MAX_SIZE {
            return Err(Error::settings(
                path,
                None,
                format!(
                    "{len} bytes: too close to the {MAX_SIZE}-byte limit for vmcrypt to add its metadata"
                ),
            ));
        }
        Ok(())
    }

    /// The file's bytes: the lines, then, for a file that was read NUL padded, NULs up to its
    /// length as read or, if it outgrew that, up to the next 512-byte block (QEMU's shape).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.text);
            s.push_str(l.eol);
        }
        if let Some(len) = self.padded_len {
            let want = len.max(s.len().next_multiple_of(512));
            s.extend(std::iter::repeat_n('\0', want - s.len()));
        }
        s
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.lines.iter().position(|l| {
            l.entry
                .as_ref()
                .is_some_and(|e| e.key.eq_ignore_ascii_case(key))
        })
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-[]".contains(&b))
}

fn parse_line(raw: &str, flavor: Flavor) -> std::result::Result<Option<Entry>, String> {
    let t = raw.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    if flavor == Flavor::Descriptor && is_extent_line(t) {
        return Ok(None);
    }
    let Some(eq) = raw.find('=') else {
        return Err("not a `key = value` line".into());
    };
    let key = raw[..eq].trim();
    if !valid_key(key) {
        // Never echoed: in a keystore or a backup the text before a '=' may be part of a key
        // (base64 ends in '='); the line number is enough to find it.
        return Err("the text before '=' is not a settings key".into());
    }
    let after = &raw[eq + 1..];
    let lead = after.len() - after.trim_start().len();
    let vstart = eq + 1 + lead;
    let v = &raw[vstart..];
    if let Some(inner) = v.strip_prefix('"') {
        let close = inner.find('"').ok_or("unterminated quoted value")?;
        if !inner[close + 1..].trim().is_empty() {
            return Err("text after the closing quote".into());
        }
        Ok(Some(Entry {
            key: key.to_string(),
            start: vstart + 1,
            end: vstart + 1 + close,
        }))
    } else {
        let val = v.trim_end();
        if val.contains('"') {
            return Err("stray quote in value".into());
        }
        Ok(Some(Entry {
            key: key.to_string(),
            start: vstart,
            end: vstart + val.len(),
        }))
    }
}

/// `RW 2048 FLAT "disk-flat.vmdk" 0` and its kin.
pub(crate) fn is_extent_line(t: &str) -> bool {
    let first = t.split_whitespace().next().unwrap_or("");
    matches!(first, "RW" | "RDONLY" | "NOACCESS") && t.contains('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VMX: &str = ".encoding = \"UTF-8\"\r\nconfig.version = \"8\"\r\n# a comment\r\n\r\nscsi0:0.fileName = \"disk.vmdk\"\r\nguestOS=\"other\"";

    fn p(s: &str, f: Flavor) -> Result<Settings> {
        Settings::parse(s.as_bytes(), f, Path::new("t"))
    }

    #[test]
    fn untouched_round_trip_is_byte_identical() {
        let s = p(VMX, Flavor::Vmx).expect("valid");
        assert_eq!(s.render(), VMX);
        assert_eq!(s.get("SCSI0:0.filename"), Some("disk.vmdk"));
    }

    #[test]
    fn a_nul_padded_descriptor_is_read_and_rendered_padded() {
        let mut bytes =
            b"# Disk DescriptorFile\nversion=1\nRW 2048 FLAT \"d-flat.vmdk\" 0\n".to_vec();
        let text_len = bytes.len();
        bytes.resize(512, 0);
        let path = Path::new("d.vmdk");
        let mut s = Settings::parse(&bytes, Flavor::Descriptor, path).expect("padded descriptor");
        assert_eq!(
            s.render().as_bytes(),
            &bytes[..],
            "untouched: byte for byte"
        );
        s.set("ddb.note", &"n".repeat(600)).expect("set");
        let grown = s.render();
        assert_eq!(grown.len(), 1024, "outgrown: the next whole block");
        assert!(grown.len() > text_len + 600 && grown.ends_with('\0'));
        // As QEMU reads it: the text ends at the first NUL, whatever follows (a shorter CID
        // rewritten in place leaves the old text's tail behind it).
        let mut remnant = bytes.clone();
        remnant[text_len + 1] = b'\n';
        let s = Settings::parse(&remnant, Flavor::Descriptor, path).expect("remnant after the NUL");
        assert_eq!(
            s.render().as_bytes(),
            &bytes[..],
            "rendered without the remnant"
        );
        // Only descriptors are NUL padded.
        assert!(Settings::parse(&bytes, Flavor::Vmx, path).is_err());
    }

    #[test]
    fn set_touches_only_its_line() {
        let mut s = p(VMX, Flavor::Vmx).expect("valid");
        s.set("guestOS", "linux").expect("set");
        s.set("encryption.keySafe", "vmware:key/null/")
            .expect("set");
        let out = s.render();
        assert_eq!(
            out,
            ".encoding = \"UTF-8\"\r\nconfig.version = \"8\"\r\n# a comment\r\n\r\nscsi0:0.fileName = \"disk.vmdk\"\r\nguestOS=\"linux\"\r\nencryption.keySafe = \"vmware:key/null/\"\r\n"
        );
        assert!(s.remove("encryption.keySafe"));
        s.set("guestOS", "other").expect("set");
        assert_eq!(s.render(), format!("{VMX}\r\n"));
    }

    #[test]
    fn refuses_what_is_not_settings() {
        for bad in [
            "just some text\n",
            "a = \"unterminated\n",
            "a = \"x\" trailing\n",
            "a = \"1\"\nA = \"2\"\n",
            "bad key = \"1\"\n",
            "RW 2048 FLAT \"x-flat.vmdk\" 0\n",
        ] {
            assert!(p(bad, Flavor::Vmx).is_err(), "{bad:?}");
        }
        assert!(Settings::parse(b"a = \"1\"\n\0\x01", Flavor::Vmx, Path::new("t")).is_err());
        assert!(Settings::parse(&[0xff, 0xfe], Flavor::Vmx, Path::new("t")).is_err());
        assert!(p("RW 2048 FLAT \"x-flat.vmdk\" 0\n", Flavor::Descriptor).is_ok());
    }

    #[test]
    fn refuses_unsafe_values() {
        let mut s = p("", Flavor::Vmx).expect("empty is valid");
        assert!(s.set("a", "x\"y").is_err());
        assert!(s.set("a", "x\ny").is_err());
        assert!(s.set("a b", "x").is_err());
    }

    proptest! {
        #[test]
        fn parse_render_round_trips(lines in prop::collection::vec(
            prop_oneof![
                "[a-z][a-z0-9.:_]{0,10}".prop_map(|k| format!("{k} = \"v\"")),
                "[a-z][a-z0-9.]{0,10}=[a-z0-9]{0,5}".prop_map(|s| s),
                "# [ -~]{0,20}".prop_map(|s| s),
                Just(String::new()),
            ], 0..12),
            crlf in any::<bool>(), last_eol in any::<bool>()) {
            let eol = if crlf { "\r\n" } else { "\n" };
            // Make keys unique so the input is valid.
            let mut seen = std::collections::HashSet::new();
            let lines: Vec<String> = lines.into_iter().filter(|l| {
                match l.split_once('=') { Some((k, _)) if !l.starts_with('#') => seen.insert(k.trim().to_ascii_lowercase()), _ => true }
            }).collect();
            let mut text = lines.join(eol);
            if last_eol && !text.is_empty() { text.push_str(eol); }
            let s = Settings::parse(text.as_bytes(), Flavor::Vmx, Path::new("t")).expect("valid");
            prop_assert_eq!(s.render(), text);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Settings::parse(&bytes, Flavor::Descriptor, Path::new("t"));
        }
    }
}
