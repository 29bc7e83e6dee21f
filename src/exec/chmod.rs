//! `--chmod=` values: octal (`755`, `0644`) or symbolic (`u+x,go-w`, `a=rX`),
//! applied to a source's mode the way chmod(1) does.

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid --chmod value {0:?}: use octal like 755 or symbolic like u+x,go-w")]
pub struct ChmodError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    who: u32,
    actions: Vec<(char, Perm)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Perm {
    Bits { bits: u32, cond_x: bool },
    Copy(char),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

impl Chmod {
    pub fn parse(spec: &str) -> Result<Chmod, ChmodError> {
        let err = || ChmodError(spec.to_string());
        if !spec.is_empty() && spec.chars().all(|c| c.is_digit(8)) {
            let mode = u32::from_str_radix(spec, 8).map_err(|_| err())?;
            if mode > 0o7777 {
                return Err(err());
            }
            return Ok(Chmod::Octal(mode));
        }
        let mut clauses = Vec::new();
        for part in spec.split(',') {
            clauses.push(parse_clause(part).ok_or_else(err)?);
        }
        if clauses.is_empty() {
            return Err(err());
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new permission bits (0o7777) for an entry with `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => clauses.iter().fold(mode & 0o7777, |m, c| c.apply(m, is_dir)),
        }
    }
}

fn parse_clause(part: &str) -> Option<Clause> {
    let mut chars = part.chars().peekable();
    let mut who = 0;
    while let Some(&c) = chars.peek() {
        who |= match c {
            'u' => USER,
            'g' => GROUP,
            'o' => OTHER,
            'a' => USER | GROUP | OTHER,
            _ => break,
        };
        chars.next();
    }
    let mut actions = Vec::new();
    while let Some(op) = chars.next() {
        if !matches!(op, '+' | '-' | '=') {
            return None;
        }
        let mut bits = 0;
        let mut cond_x = false;
        let mut copy = None;
        while let Some(&c) = chars.peek() {
            match c {
                'r' => bits |= 0o444,
                'w' => bits |= 0o222,
                'x' => bits |= 0o111,
                'X' => cond_x = true,
                's' => bits |= 0o6000,
                't' => bits |= 0o1000,
                'u' | 'g' | 'o' if bits == 0 && !cond_x && copy.is_none() => copy = Some(c),
                '+' | '-' | '=' => break,
                _ => return None,
            }
            chars.next();
        }
        let perm = match copy {
            Some(c) => Perm::Copy(c),
            None => Perm::Bits { bits, cond_x },
        };
        actions.push((op, perm));
    }
    if actions.is_empty() {
        return None;
    }
    Some(Clause { who, actions })
}

impl Clause {
    fn apply(&self, mut mode: u32, is_dir: bool) -> u32 {
        // No `who` means `a`, masked by the umask; builds use umask 022 like docker.
        let (who, umask) = if self.who == 0 { (USER | GROUP | OTHER, 0o022) } else { (self.who, 0) };
        for (op, perm) in &self.actions {
            let bits = match perm {
                Perm::Bits { bits, cond_x } => {
                    let x = if *cond_x && (is_dir || mode & 0o111 != 0) { 0o111 } else { 0 };
                    bits | x
                }
                Perm::Copy(c) => {
                    let src = match c {
                        'u' => (mode >> 6) & 7,
                        'g' => (mode >> 3) & 7,
                        _ => mode & 7,
                    };
                    src * 0o111
                }
            };
            let bits = bits & who & !umask;
            match op {
                '+' => mode |= bits,
                '-' => mode &= !bits,
                _ => mode = (mode & !(who & 0o7777)) | bits,
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(spec: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal() {
        assert_eq!(sym("755", 0o600, false), 0o755);
        assert_eq!(sym("04755", 0o600, false), 0o4755);
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("77777").is_err());
    }

    #[test]
    fn symbolic() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=r", 0o777, false), 0o444);
        assert_eq!(sym("a=rX", 0o600, true), 0o555);
        assert_eq!(sym("a=rX", 0o600, false), 0o444);
        assert_eq!(sym("a=rX", 0o700, false), 0o555);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g=u", 0o740, false), 0o770);
        assert_eq!(sym("o+t", 0o777, true), 0o1777);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "u", "z+x", "u+q", "rwx", "u+x,"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }
}
