//! The driver: directives, then one logical line at a time to a typed
//! instruction (reading heredoc bodies when it asks), then the file-level
//! rules (a FROM must exist and only ARG may precede the first one).

use super::ast::{Command, Dockerfile, Instruction};
use super::directives;
use super::error::DockerfileError;
use super::instructions::{self, fill_heredocs};
use super::lexer::Lexer;

pub(crate) fn parse(source: &str, path: &str) -> Result<Dockerfile, DockerfileError> {
    let mut lexer = Lexer::new(source);
    let directives = directives::parse(lexer.lines(), path)?;
    lexer.set_escape(directives.escape);

    let mut list: Vec<Instruction> = Vec::new();
    let mut seen_from = false;
    while let Some(line) = lexer.next_logical() {
        let built = instructions::build(path, &line, 0, directives.escape)?;
        let mut instruction = built.instruction;
        if !built.heredocs.is_empty() {
            let (bodies, last_line) = lexer.read_heredocs(path, &built.heredocs)?;
            fill_heredocs(&mut instruction, &mut bodies.into_iter(), last_line);
        }
        match instruction.command {
            Command::From { .. } => seen_from = true,
            Command::Arg(_) => {}
            _ if !seen_from => return Err(before_from(path, &instruction)),
            _ => {}
        }
        list.push(instruction);
    }
    if !seen_from {
        let help = if list.is_empty() {
            "the file has no instructions; start it with FROM <image>"
        } else {
            "add FROM <image> after the global ARGs"
        };
        return Err(DockerfileError::new(path, 1, 1, "no FROM instruction").with_help(help));
    }
    Ok(Dockerfile { path: path.to_string(), directives, instructions: list })
}

fn before_from(path: &str, instruction: &Instruction) -> DockerfileError {
    DockerfileError::new(
        path,
        instruction.span.line,
        instruction.span.column,
        format!("{} instruction before the first FROM", instruction.command.keyword()),
    )
    .with_help("a Dockerfile must start with FROM; only ARG, comments and parser directives may come before it")
}
