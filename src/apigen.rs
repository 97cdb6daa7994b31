//! kp's own generator for VPP API definitions (`.api` files): parses the
//! subset of VPP's API language that `kp.api` uses, computes the message
//! CRCs the way VPP 26.06's `vppapigen` does, and writes `vppapigen`-style
//! JSON. Used by `build.rs` (it has only std dependencies) and tested here.
//!
//! CRC rules (vppapigen): a message's CRC is `crc32` of the Python `repr`
//! of its field list (without `option`s), e.g. `[['u32', 'client_index'],
//! ['u32', 'context']]`; then, for every field of a user type, the type's
//! own CRC is chained in (`crc32(type_crc, crc)`) and, for typedefs and
//! unions, its fields are folded recursively. An enum's CRC text is the
//! repr of its `[name, value]` pairs; an alias (`typedef u32 x;`) has the
//! CRC text `[]`. `autoreply` adds `X_reply` with `context` and `retval`.

use std::collections::BTreeMap;
use std::fmt::Write;

// ---------------------------------------------------------------- CRC-32

/// zlib/`binascii.crc32` CRC-32, continuing from `crc`.
pub fn crc32(data: &[u8], crc: u32) -> u32 {
    let mut c = !crc;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

// ---------------------------------------------------------------- model

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub ty: String,
    pub name: String,
    /// `Some(n)` for `[n]`, `Some(0)` with `len_field` for `[field]`.
    pub array: Option<u32>,
    pub len_field: Option<String>,
    /// `[default=...]` and other field options, as JSON values.
    pub options: Vec<(String, String)>,
}

impl Field {
    fn repr(&self) -> String {
        match (self.array, &self.len_field) {
            (None, _) => format!("['{}', '{}']", self.ty, self.name),
            (Some(n), None) => format!("['{}', '{}', {n}, None]", self.ty, self.name),
            (Some(n), Some(l)) => format!("['{}', '{}', {n}, '{l}']", self.ty, self.name),
        }
    }

    fn json(&self) -> String {
        let mut s = format!("[\"{}\", \"{}\"", self.ty, self.name);
        if let Some(n) = self.array {
            write!(s, ", {n}").unwrap();
            if let Some(l) = &self.len_field {
                write!(s, ", \"{l}\"").unwrap();
            }
        } else if !self.options.is_empty() {
            let opts: Vec<String> = self.options.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            write!(s, ", {{{}}}", opts.join(", ")).unwrap();
        }
        s + "]"
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Enum { enumtype: String, values: Vec<(String, i64)> },
    Typedef { fields: Vec<Field> },
    Union { fields: Vec<Field> },
    Alias { target: Field },
    Define { fields: Vec<Field>, comment: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub name: String,
    pub kind: Kind,
    /// The object's own CRC text (before folding).
    crc_text: String,
}

fn fields_repr(fields: &[Field]) -> String {
    format!("[{}]", fields.iter().map(Field::repr).collect::<Vec<_>>().join(", "))
}

/// A parsed `.api` file with its imports resolved.
#[derive(Debug, Clone, Default)]
pub struct Api {
    pub module: String,
    pub version: Option<String>,
    pub imports: Vec<String>,
    /// Imported types first (as vppapigen orders them), then the file's.
    pub objects: Vec<Object>,
    /// Objects from imports (types only).
    n_imported: usize,
    /// Running CRC of every object, as vppapigen's `file_crc`.
    file_crc: u32,
}

/// A message with its wire name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub name: String,
    pub crc: u32,
}

impl Api {
    /// Parses `text` (module `module`); `resolve` returns the text of an
    /// imported file by its import path.
    pub fn parse(module: &str, text: &str, resolve: &dyn Fn(&str) -> Option<String>) -> Result<Api, String> {
        let mut api = Api { module: module.to_string(), ..Default::default() };
        let mut imported = Vec::new();
        let own = parse_objects(text, &mut api, Some(&mut imported), resolve)?;
        api.n_imported = imported.len();
        api.objects = imported;
        // autoreply replies follow their requests.
        api.objects.extend(own);
        Ok(api)
    }

    fn lookup(&self, ty: &str) -> Option<&Object> {
        let name = ty.strip_prefix("vl_api_")?.strip_suffix("_t")?;
        self.objects.iter().find(|o| o.name == name && !matches!(o.kind, Kind::Define { .. }))
    }

    fn fold(&self, fields: &[Field], mut crc: u32) -> u32 {
        for f in fields {
            if f.ty.starts_with("vl_api_") {
                if let Some(t) = self.lookup(&f.ty) {
                    crc = crc32(t.crc_text.as_bytes(), crc);
                    match &t.kind {
                        Kind::Typedef { fields } | Kind::Union { fields } => crc = self.fold(fields, crc),
                        _ => {}
                    }
                }
            }
        }
        crc
    }

    /// Every message (requests, replies, details) with its CRC.
    pub fn messages(&self) -> Vec<Message> {
        self.defines()
            .map(|(o, fields)| Message {
                name: o.name.clone(),
                crc: self.fold(fields, crc32(o.crc_text.as_bytes(), 0)),
            })
            .collect()
    }

    fn defines(&self) -> impl Iterator<Item = (&Object, &Vec<Field>)> {
        self.objects.iter().filter_map(|o| match &o.kind {
            Kind::Define { fields, .. } => Some((o, fields)),
            _ => None,
        })
    }

    fn type_size(&self, f: &Field) -> usize {
        let one = match f.ty.as_str() {
            "u8" | "i8" | "bool" | "string" => 1,
            "u16" | "i16" => 2,
            "u32" | "i32" | "f32" => 4,
            "u64" | "i64" | "f64" => 8,
            other => match self.lookup(other).map(|o| &o.kind) {
                Some(Kind::Enum { enumtype, .. }) => self.type_size(&Field {
                    ty: enumtype.clone(),
                    name: String::new(),
                    array: None,
                    len_field: None,
                    options: vec![],
                }),
                Some(Kind::Alias { target }) => self.type_size(target),
                Some(Kind::Typedef { fields }) => fields.iter().map(|f| self.type_size(f)).sum(),
                Some(Kind::Union { fields }) => fields.iter().map(|f| self.type_size(f)).max().unwrap_or(0),
                _ => 0,
            },
        };
        one * f.array.map_or(1, |n| n as usize)
    }

    /// The fixed wire size of every message, `_vl_msg_id` included.
    pub fn wire_sizes(&self) -> Vec<(String, usize)> {
        self.defines()
            .map(|(o, fields)| (o.name.clone(), 2 + fields.iter().map(|f| self.type_size(f)).sum::<usize>()))
            .collect()
    }

    /// (request, reply, is_stream) in vppapigen's implicit service order.
    pub fn services(&self) -> Vec<(String, String, bool)> {
        let names: Vec<&str> = self.defines().map(|(o, _)| o.name.as_str()).collect();
        let mut out = Vec::new();
        for &d in &names {
            if d.ends_with("_reply") || d.ends_with("_details") {
                continue;
            }
            if let Some(base) = d.strip_suffix("_dump") {
                out.push((d.to_string(), format!("{base}_details"), true));
            } else if names.contains(&format!("{d}_reply").as_str()) {
                out.push((d.to_string(), format!("{d}_reply"), false));
            }
        }
        out
    }

    /// `vppapigen`-format JSON (`.api.json`).
    pub fn to_json(&self) -> String {
        let mut types = Vec::new();
        let mut unions = Vec::new();
        let mut enums = Vec::new();
        let mut aliases = Vec::new();
        for o in &self.objects {
            match &o.kind {
                Kind::Typedef { fields } => types.push(def_json(&o.name, fields, None)),
                Kind::Union { fields } => unions.push(def_json(&o.name, fields, None)),
                Kind::Enum { enumtype, values } => {
                    let mut e = format!("[\"{}\"", o.name);
                    for (n, v) in values {
                        write!(e, ", [\"{n}\", {v}]").unwrap();
                    }
                    write!(e, ", {{\"enumtype\": \"{enumtype}\"}}]").unwrap();
                    enums.push(e);
                }
                Kind::Alias { target } => {
                    let len = target.array.map(|n| format!(", \"length\": {n}")).unwrap_or_default();
                    aliases.push(format!("\"{}\": {{\"type\": \"{}\"{len}}}", o.name, target.ty));
                }
                Kind::Define { .. } => {}
            }
        }
        let crcs: BTreeMap<String, u32> = self.messages().into_iter().map(|m| (m.name, m.crc)).collect();
        let messages: Vec<String> = self
            .objects
            .iter()
            .filter_map(|o| match &o.kind {
                Kind::Define { fields, comment } => {
                    let mut all = vec![Field {
                        ty: "u16".into(),
                        name: "_vl_msg_id".into(),
                        array: None,
                        len_field: None,
                        options: vec![],
                    }];
                    all.extend(fields.iter().cloned());
                    let mut meta = format!("{{\"crc\": \"0x{:08x}\", \"options\": {{}}", crcs[&o.name]);
                    if let Some(c) = comment {
                        write!(meta, ", \"comment\": {}", json_string(c)).unwrap();
                    }
                    meta.push('}');
                    Some(def_json(&o.name, &all, Some(meta)))
                }
                _ => None,
            })
            .collect();
        let services: Vec<String> = self
            .services()
            .into_iter()
            .map(|(req, rep, stream)| {
                let s = if stream { ", \"stream\": true" } else { "" };
                format!("\"{req}\": {{\"reply\": \"{rep}\"{s}}}")
            })
            .collect();
        let options = match &self.version {
            Some(v) => format!("{{\"version\": \"{v}\"}}"),
            None => "{}".into(),
        };
        let imports: Vec<String> = self.imports.iter().map(|i| format!("\"{i}\"")).collect();
        format!(
            "{{\n    \"module\": \"{}\",\n    \"types\": [{}],\n    \"messages\": [{}],\n    \"unions\": [{}],\n    \
             \"enums\": [{}],\n    \"enumflags\": [],\n    \"services\": {{{}}},\n    \"options\": {options},\n    \
             \"aliases\": {{{}}},\n    \"vl_api_version\": \"0x{:x}\",\n    \"imports\": [{}],\n    \
             \"counters\": [],\n    \"paths\": []\n}}\n",
            self.module,
            join(&types),
            join(&messages),
            join(&unions),
            join(&enums),
            join(&services),
            join(&aliases),
            self.file_crc,
            imports.join(", ")
        )
    }
}

fn join(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!("\n        {}\n    ", items.join(",\n        "))
}

fn def_json(name: &str, fields: &[Field], meta: Option<String>) -> String {
    let mut s = format!("[\"{name}\"");
    for f in fields {
        write!(s, ", {}", f.json()).unwrap();
    }
    if let Some(m) = meta {
        write!(s, ", {m}").unwrap();
    }
    s + "]"
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out + "\""
}

// ---------------------------------------------------------------- parser

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Id(String),
    Num(i64),
    Str(String),
    Punct(char),
    /// A comment and the line it ends on.
    Comment(String, usize),
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let b = text.as_bytes();
    let (mut i, mut line) = (0, 1);
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i] as char;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..].find("*/").ok_or("unterminated comment")? + i + 4;
            let body = &text[i..end];
            line += body.matches('\n').count();
            out.push((Tok::Comment(body.to_string(), line), line));
            i = end;
        } else if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(b.len(), |e| i + e);
        } else if c == '"' {
            let end = text[i + 1..].find('"').ok_or("unterminated string")? + i + 1;
            out.push((Tok::Str(text[i + 1..end].to_string()), line));
            i = end + 1;
        } else if c.is_ascii_digit() || (c == '-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && (b[i] as char).is_ascii_alphanumeric() {
                i += 1;
            }
            let t = &text[start..i];
            let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                i64::from_str_radix(h, 16)
            } else {
                t.parse()
            }
            .map_err(|_| format!("line {line}: bad number {t}"))?;
            out.push((Tok::Num(v), line));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Id(text[start..i].to_string()), line));
        } else if "{}[];,=:".contains(c) {
            out.push((Tok::Punct(c), line));
            i += 1;
        } else {
            return Err(format!("line {line}: unexpected '{c}'"));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    last_comment: Option<(String, usize)>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }
    fn line(&self) -> usize {
        self.toks.get(self.at).map_or(0, |t| t.1)
    }
    fn next(&mut self) -> Result<Tok, String> {
        let t = self.toks.get(self.at).cloned().ok_or("unexpected end of file")?;
        self.at += 1;
        Ok(t.0)
    }
    fn id(&mut self) -> Result<String, String> {
        match self.next()? {
            Tok::Id(s) => Ok(s),
            t => Err(format!("line {}: expected a name, got {t:?}", self.line())),
        }
    }
    fn punct(&mut self, c: char) -> Result<(), String> {
        match self.next()? {
            Tok::Punct(p) if p == c => Ok(()),
            t => Err(format!("line {}: expected '{c}', got {t:?}", self.line())),
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    /// Skips comments, remembering the last one.
    fn skip_comments(&mut self) {
        while let Some(Tok::Comment(c, end)) = self.peek().cloned() {
            self.last_comment = Some((c, end));
            self.at += 1;
        }
    }
    fn value(&mut self) -> Result<String, String> {
        Ok(match self.next()? {
            Tok::Num(n) => n.to_string(),
            Tok::Str(s) => json_string(&s),
            Tok::Id(s) if s == "true" || s == "false" => s,
            Tok::Id(s) => json_string(&s),
            t => return Err(format!("line {}: bad option value {t:?}", self.line())),
        })
    }
    /// `type name;` `type name[N];` `type name[len];` `type name[opt=v, ...];`
    fn field(&mut self) -> Result<Field, String> {
        let ty = self.id()?;
        let name = self.id()?;
        let mut f = Field { ty, name, array: None, len_field: None, options: vec![] };
        if self.eat('[') {
            match self.next()? {
                Tok::Num(n) => {
                    f.array = Some(n as u32);
                    self.punct(']')?;
                }
                Tok::Punct(']') => f.array = Some(0),
                Tok::Id(k) => {
                    if self.eat('=') {
                        let v = self.value()?;
                        f.options.push((k, v));
                        while self.eat(',') {
                            let k = self.id()?;
                            self.punct('=')?;
                            let v = self.value()?;
                            f.options.push((k, v));
                        }
                    } else {
                        f.array = Some(0);
                        f.len_field = Some(k);
                    }
                    self.punct(']')?;
                }
                t => return Err(format!("line {}: bad field suffix {t:?}", self.line())),
            }
        }
        self.punct(';')?;
        Ok(f)
    }
    fn block(&mut self) -> Result<Vec<Field>, String> {
        self.punct('{')?;
        let mut fields = Vec::new();
        loop {
            self.skip_comments();
            if self.eat('}') {
                break;
            }
            if self.peek() == Some(&Tok::Id("option".into())) {
                // Message options are not part of the CRC; kp.api has none.
                while self.next()? != Tok::Punct(';') {}
                continue;
            }
            fields.push(self.field()?);
        }
        self.punct(';')?;
        Ok(fields)
    }
}

fn autoreply_added(kw: &str, flags: &[String]) -> bool {
    kw == "define" && flags.iter().any(|f| f == "autoreply")
}

const FLAGS: &[&str] = &["manual_print", "manual_endian", "dont_trace", "autoendian", "autoreply"];

fn parse_objects(
    text: &str,
    api: &mut Api,
    mut imported: Option<&mut Vec<Object>>,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Object>, String> {
    let mut p = Parser { toks: lex(text)?, at: 0, last_comment: None };
    let mut objs = Vec::new();
    loop {
        p.skip_comments();
        if p.peek().is_none() {
            break;
        }
        let line = p.line();
        let mut flags = Vec::new();
        let mut kw = p.id()?;
        while FLAGS.contains(&kw.as_str()) {
            flags.push(kw);
            kw = p.id()?;
        }
        let comment = p.last_comment.take().filter(|(_, end)| line <= end + 1).map(|(c, _)| c);
        match kw.as_str() {
            "option" => {
                let k = p.id()?;
                p.punct('=')?;
                let v = match p.next()? {
                    Tok::Str(s) => s,
                    t => return Err(format!("line {line}: bad option {t:?}")),
                };
                p.punct(';')?;
                if imported.is_some() && k == "version" {
                    api.version = Some(v);
                }
                api.file_crc = crc32(k.as_bytes(), api.file_crc);
            }
            "import" => {
                let path = match p.next()? {
                    Tok::Str(s) => s,
                    t => return Err(format!("line {line}: bad import {t:?}")),
                };
                p.punct(';')?;
                let body = resolve(&path).ok_or(format!("import \"{path}\" not found"))?;
                let mut sub = Api::default();
                let types = parse_objects(&body, &mut sub, None, resolve)?;
                for o in types.into_iter().filter(|o| !matches!(o.kind, Kind::Define { .. })) {
                    api.file_crc = crc32(o.crc_text.as_bytes(), api.file_crc);
                    match imported.as_deref_mut() {
                        Some(list) => list.push(o),
                        None => objs.push(o),
                    }
                }
                if imported.is_some() {
                    api.imports.push(path);
                }
            }
            "enum" => {
                let name = p.id()?;
                let enumtype = if p.eat(':') { p.id()? } else { "u32".into() };
                p.punct('{')?;
                let mut values = Vec::new();
                let mut next = 0i64;
                loop {
                    p.skip_comments();
                    if p.eat('}') {
                        break;
                    }
                    let id = p.id()?;
                    if p.eat('=') {
                        match p.next()? {
                            Tok::Num(n) => next = n,
                            t => return Err(format!("line {line}: bad enum value {t:?}")),
                        }
                    }
                    values.push((id, next));
                    next += 1;
                    p.punct(',')?;
                }
                p.punct(';')?;
                let crc_text = format!(
                    "[{}]",
                    values.iter().map(|(n, v)| format!("['{n}', {v}]")).collect::<Vec<_>>().join(", ")
                );
                objs.push(Object { name, kind: Kind::Enum { enumtype, values }, crc_text });
            }
            "typedef" => {
                // `typedef name { ... };` or the alias `typedef type name[..];`
                let first = p.id()?;
                if p.peek() == Some(&Tok::Punct('{')) {
                    let fields = p.block()?;
                    let crc_text = fields_repr(&fields);
                    objs.push(Object { name: first, kind: Kind::Typedef { fields }, crc_text });
                } else {
                    p.at -= 1;
                    let target = p.field()?;
                    objs.push(Object {
                        name: target.name.clone(),
                        kind: Kind::Alias { target },
                        crc_text: "[]".into(),
                    });
                }
            }
            "union" => {
                let name = p.id()?;
                let fields = p.block()?;
                let crc_text = fields_repr(&fields);
                objs.push(Object { name, kind: Kind::Union { fields }, crc_text });
            }
            "define" => {
                let name = p.id()?;
                let fields = p.block()?;
                let crc_text = fields_repr(&fields);
                let autoreply = flags.iter().any(|f| f == "autoreply");
                objs.push(Object { name: name.clone(), kind: Kind::Define { fields, comment }, crc_text });
                if autoreply {
                    let fields = vec![
                        Field {
                            ty: "u32".into(),
                            name: "context".into(),
                            array: None,
                            len_field: None,
                            options: vec![],
                        },
                        Field {
                            ty: "i32".into(),
                            name: "retval".into(),
                            array: None,
                            len_field: None,
                            options: vec![],
                        },
                    ];
                    let crc_text = fields_repr(&fields);
                    objs.push(Object {
                        name: format!("{name}_reply"),
                        kind: Kind::Define { fields, comment: None },
                        crc_text,
                    });
                }
            }
            "service" => return Err(format!("line {line}: explicit service blocks are not supported")),
            other => return Err(format!("line {line}: unexpected '{other}'")),
        }
        // vppapigen's file CRC runs over every object as parsed, in file
        // order (autoreply replies are generated later, so not them).
        if matches!(kw.as_str(), "enum" | "typedef" | "union" | "define") {
            let at = if autoreply_added(&kw, &flags) { objs.len() - 2 } else { objs.len() - 1 };
            api.file_crc = crc32(objs[at].crc_text.as_bytes(), api.file_crc);
        }
    }
    Ok(objs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"", 0), 0);
        assert_eq!(crc32(b"123456789", 0), 0xcbf4_3926);
        assert_eq!(crc32(b"56789", crc32(b"1234", 0)), 0xcbf4_3926, "chaining");
    }

    /// VPP 26.06's own `lb_conf` and any autoreply reply, from the facts.
    #[test]
    fn known_vpp_crcs() {
        let types = "typedef u8 ip4_address[4];\ntypedef u8 ip6_address[16];\n";
        let lb = "option version = \"1.1.0\";\nimport \"t.api\";\n\
                  autoreply define lb_conf\n{\n  u32 client_index;\n  u32 context;\n  \
                  vl_api_ip4_address_t ip4_src_address;\n  vl_api_ip6_address_t ip6_src_address;\n  \
                  u32 sticky_buckets_per_core [default=0xffffffff];\n  u32 flow_timeout [default=0xffffffff];\n};\n";
        let api = Api::parse("lb", lb, &|p| (p == "t.api").then(|| types.to_string())).unwrap();
        let m = api.messages();
        assert_eq!(m[0], Message { name: "lb_conf".into(), crc: 0x56cd_3261 });
        assert_eq!(m[1], Message { name: "lb_conf_reply".into(), crc: 0xe8d4_e804 });
        let json = api.to_json();
        assert!(json.contains("[\"u32\", \"flow_timeout\", {\"default\": 4294967295}]"), "{json}");
        assert!(json.contains("\"lb_conf\": {\"reply\": \"lb_conf_reply\"}"), "{json}");
        assert!(json.contains("\"ip4_address\": {\"type\": \"u8\", \"length\": 4}"), "{json}");
    }

    #[test]
    fn dumps_get_stream_services_and_enums_fold() {
        let text = "enum e : u8 { A = 0, B, C = 7, };\n\
                    typedef t { vl_api_e_t x; u8 y[4]; };\n\
                    define d_dump { u32 client_index; u32 context; };\n\
                    define d_details { u32 context; vl_api_t_t t; };\n";
        let api = Api::parse("m", text, &|_| None).unwrap();
        assert_eq!(api.services(), vec![("d_dump".into(), "d_details".into(), true)]);
        let e = "[['A', 0], ['B', 1], ['C', 7]]";
        let t = "[['vl_api_e_t', 'x'], ['u8', 'y', 4, None]]";
        let own = "[['u32', 'context'], ['vl_api_t_t', 't']]";
        let want = crc32(e.as_bytes(), crc32(t.as_bytes(), crc32(own.as_bytes(), 0)));
        assert_eq!(api.messages()[1].crc, want);
    }

    #[test]
    fn errors_name_the_line() {
        assert!(Api::parse("m", "define x { u32 ; };", &|_| None).unwrap_err().contains("line 1"));
        assert!(Api::parse("m", "import \"nope.api\";", &|_| None).unwrap_err().contains("nope.api"));
    }
}
