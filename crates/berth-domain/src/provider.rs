//! Derives the LLM provider from a model slug (REFERENCE.md §7.4).
//!
//! At Create, a non-empty model is stored as the `MODEL` secret and, when a provider can be
//! derived from the slug's prefix, as `LLM_PROVIDER` too, so runtimes know which credentials to use.

/// The provider for a model slug such as `anthropic/claude-sonnet-4`: the text before the first
/// `/` is looked up case-sensitively. Slugs without `/`, with an empty prefix, or with an unknown
/// prefix derive nothing. `openai/…` and `nousresearch/…` deliberately map to `openrouter`.
pub fn derive_provider_from_model_slug(model: &str) -> Option<&'static str> {
    let (prefix, _) = model.split_once('/')?;
    let provider = match prefix {
        "minimax" => "minimax",
        "minimax-cn" => "minimax-cn",
        "anthropic" => "anthropic",
        "gemini" => "gemini",
        "deepseek" => "deepseek",
        "zai" => "zai",
        "kimi-coding" => "kimi-coding",
        "kimi-coding-cn" => "kimi-coding-cn",
        "alibaba" | "dashscope" | "qwen" => "alibaba",
        "xiaomi" | "mimo" => "xiaomi",
        "arcee" | "arcee-ai" => "arcee",
        "nvidia" | "nim" => "nvidia",
        "ollama-cloud" => "ollama-cloud",
        "huggingface" | "hf" => "huggingface",
        "ai-gateway" | "aigateway" => "ai-gateway",
        "kilocode" => "kilocode",
        "opencode-zen" => "opencode-zen",
        "opencode-go" => "opencode-go",
        "openrouter" => "openrouter",
        "custom" => "custom",
        "nousresearch" | "openai" => "openrouter",
        "xai" | "grok" => "xai",
        "bedrock" | "aws" => "bedrock",
        "tencent" | "tencent-tokenhub" => "tencent-tokenhub",
        "gmi" => "gmi",
        "qwen-oauth" => "qwen-oauth",
        "lmstudio" | "lm-studio" => "lmstudio",
        "minimax-oauth" => "minimax-oauth",
        "alibaba-coding-plan" => "alibaba-coding-plan",
        "google-gemini-cli" => "google-gemini-cli",
        "openai-codex" => "openai-codex",
        "copilot-acp" => "copilot-acp",
        "copilot" => "copilot",
        _ => return None,
    };
    Some(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_row() {
        let rows: &[(&str, &str)] = &[
            ("minimax", "minimax"),
            ("minimax-cn", "minimax-cn"),
            ("anthropic", "anthropic"),
            ("gemini", "gemini"),
            ("deepseek", "deepseek"),
            ("zai", "zai"),
            ("kimi-coding", "kimi-coding"),
            ("kimi-coding-cn", "kimi-coding-cn"),
            ("alibaba", "alibaba"),
            ("dashscope", "alibaba"),
            ("qwen", "alibaba"),
            ("xiaomi", "xiaomi"),
            ("mimo", "xiaomi"),
            ("arcee", "arcee"),
            ("arcee-ai", "arcee"),
            ("nvidia", "nvidia"),
            ("nim", "nvidia"),
            ("ollama-cloud", "ollama-cloud"),
            ("huggingface", "huggingface"),
            ("hf", "huggingface"),
            ("ai-gateway", "ai-gateway"),
            ("aigateway", "ai-gateway"),
            ("kilocode", "kilocode"),
            ("opencode-zen", "opencode-zen"),
            ("opencode-go", "opencode-go"),
            ("openrouter", "openrouter"),
            ("custom", "custom"),
            ("nousresearch", "openrouter"),
            ("openai", "openrouter"),
            ("xai", "xai"),
            ("grok", "xai"),
            ("bedrock", "bedrock"),
            ("aws", "bedrock"),
            ("tencent", "tencent-tokenhub"),
            ("tencent-tokenhub", "tencent-tokenhub"),
            ("gmi", "gmi"),
            ("qwen-oauth", "qwen-oauth"),
            ("lmstudio", "lmstudio"),
            ("lm-studio", "lmstudio"),
            ("minimax-oauth", "minimax-oauth"),
            ("alibaba-coding-plan", "alibaba-coding-plan"),
            ("google-gemini-cli", "google-gemini-cli"),
            ("openai-codex", "openai-codex"),
            ("copilot-acp", "copilot-acp"),
            ("copilot", "copilot"),
        ];
        assert_eq!(rows.len(), 45);
        for (prefix, provider) in rows {
            let slug = format!("{prefix}/some-model");
            assert_eq!(
                derive_provider_from_model_slug(&slug),
                Some(*provider),
                "{slug}"
            );
        }
    }

    #[test]
    fn no_provider_cases() {
        for slug in [
            "",
            "sonnet",
            "MiniMax-M2.7",
            "/model",
            "/",
            "Anthropic/claude",
            "OPENAI/gpt",
            "unknown/model",
            "anthropic-x/model",
        ] {
            assert_eq!(derive_provider_from_model_slug(slug), None, "{slug:?}");
        }
    }

    #[test]
    fn only_first_segment_counts() {
        assert_eq!(
            derive_provider_from_model_slug("openrouter/anthropic/claude-3"),
            Some("openrouter")
        );
        assert_eq!(
            derive_provider_from_model_slug("anthropic/"),
            Some("anthropic")
        );
        assert_eq!(
            derive_provider_from_model_slug("custom/a/b/c"),
            Some("custom")
        );
    }
}
