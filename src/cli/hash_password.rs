//! `wharf user hash-password`: reads a password and prints its argon2id
//! PHC string for `[[auth.user]] password_hash`. On a terminal it asks
//! twice with echo off (through `stty`, so no terminal crate and no unsafe
//! code); otherwise it reads one line of standard input, for scripts:
//! `printf '%s\n' "$PW" | wharf user hash-password`. The password never
//! appears on the command line, where `ps` would show it.

use std::io::{BufRead, IsTerminal, Write};
use std::process::{Command, Stdio};

use crate::auth;

/// Turns terminal echo back on when dropped, however reading ended.
struct EchoOff;

impl EchoOff {
    fn new() -> Result<EchoOff, String> {
        stty("-echo")?;
        Ok(EchoOff)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = stty("echo");
    }
}

fn stty(arg: &str) -> Result<(), String> {
    let status = Command::new("stty")
        .arg(arg)
        .stdin(Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run stty to turn echo off: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("stty {arg} failed ({status})"))
    }
}

fn read_line(input: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let n = input.read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    if n == 0 {
        return Err("no password on standard input".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn prompt(label: &str) -> Result<String, String> {
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let echo = EchoOff::new()?;
    let line = read_line(&mut std::io::stdin().lock());
    drop(echo);
    eprintln!();
    line
}

/// The password, from the terminal (asked twice) or from standard input.
fn read_password() -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Repeat password: ")?;
        if first != again {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        read_line(&mut std::io::stdin().lock())?
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(password)
}

/// Reads a password and returns the line to print.
pub(crate) fn run() -> Result<String, String> {
    let password = read_password()?;
    let phc = auth::hash_password(&password)?;
    Ok(format!("{phc}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_read_without_its_line_end() {
        let mut input = std::io::Cursor::new(b"s3cret pass\r\nnext\n".to_vec());
        assert_eq!(read_line(&mut input).unwrap(), "s3cret pass");
        assert_eq!(read_line(&mut input).unwrap(), "next");
        assert!(read_line(&mut input).is_err());
    }
}
