//! Markdown code blocks, so that tests can check the examples in the docs.

/// The bodies of the fenced code blocks tagged `lang` in Markdown text.
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_end() == open => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::fenced_blocks;

    #[test]
    fn fenced_blocks_are_found() {
        let md = "text\n```ini\n[Service]\nA=1\n```\n```sh\nls\n```\n```ini\n[Socket]\n```\n";
        assert_eq!(
            fenced_blocks(md, "ini"),
            vec!["[Service]\nA=1\n".to_string(), "[Socket]\n".to_string()]
        );
    }
}
