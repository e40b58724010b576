// --token-file contents: parse_token_file against a reference reading of the documented rules
// (written line by line with indices, not string_view slicing), then properties of what it
// accepts: every token is one whole line of the input after trimming, in order; none is empty,
// longer than the cap, starts with #, or holds a space, control or non-ASCII byte; the tokens
// written one per line parse back to themselves; a refusal names the first bad line; and
// AccessTokens::accepts (SHA-256 digests compared in constant time) agrees with a plain string
// comparison. A token file is the server's secret, but a client reads one too, and a wrong
// token must never let anyone in.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "core/access/access_tokens.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::token_file {
namespace {

struct Expected {
  std::vector<std::string> tokens;
  std::size_t bad_line = 0;  // 0: accepted (or refused as a whole, see `refused`)
  bool refused = false;
};

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

// The rules as the man page states them, written apart from the code under test.
Expected reference_parse(std::string_view content) {
  Expected expected;
  if (content.size() > AccessTokens::kMaxFileBytes) {
    expected.refused = true;
    return expected;
  }
  std::vector<std::string> lines;
  std::string current;
  for (char c : content) {
    if (c == '\n') {
      lines.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) lines.push_back(current);
  for (std::size_t index = 0; index < lines.size(); ++index) {
    const std::string& line = lines[index];
    std::size_t first = 0;
    while (first < line.size() && is_blank(line[first]))
      ++first;
    std::size_t last = line.size();  // one past the last kept byte
    while (last > first && (is_blank(line[last - 1]) || line[last - 1] == '\r'))
      --last;
    if (first == last || line[first] == '#') continue;
    bool usable = last - first <= AccessTokens::kMaxTokenLength;
    for (std::size_t i = first; i < last && usable; ++i)
      usable = line[i] > ' ' && line[i] < 0x7f;  // char may be signed: non-ASCII is negative
    if (!usable) {
      expected.tokens.clear();
      expected.bad_line = index + 1;
      expected.refused = true;
      return expected;
    }
    expected.tokens.push_back(line.substr(first, last - first));
  }
  if (expected.tokens.empty()) expected.refused = true;
  return expected;
}

std::vector<std::string> lines_of(std::string_view content) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < content.size()) {
    std::size_t end = std::min(content.find('\n', start), content.size());
    lines.emplace_back(content.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string joined(const std::vector<std::string>& tokens, std::string_view separator) {
  std::string text;
  for (const std::string& token : tokens)
    text += token + std::string(separator);
  return text;
}

void check_accepted(std::string_view content, const std::vector<std::string>& tokens) {
  FUZZ_CHECK(!tokens.empty(), "accepted with no token");
  // Each token is a whole input line, trimmed; the lines it came from are in file order.
  std::vector<std::string> lines = lines_of(content);
  std::size_t next_line = 0;
  for (const std::string& token : tokens) {
    FUZZ_CHECK(!token.empty() && token.size() <= AccessTokens::kMaxTokenLength,
               fmt::format("token of {} bytes", token.size()));
    FUZZ_CHECK(token.front() != '#', printable(token));
    for (char c : token)
      FUZZ_CHECK(c > ' ' && c < 0x7f,
                 fmt::format("byte {} in token {}", static_cast<int>(static_cast<unsigned char>(c)),
                             printable(token)));
    bool found = false;
    while (!found && next_line < lines.size()) {
      const std::string& line = lines[next_line++];
      std::size_t at = line.find(token);
      if (at == std::string::npos) continue;
      std::string_view before = std::string_view(line).substr(0, at);
      std::string_view after = std::string_view(line).substr(at + token.size());
      found =
          std::all_of(before.begin(), before.end(), is_blank) &&
          std::all_of(after.begin(), after.end(), [](char c) { return is_blank(c) || c == '\r'; });
    }
    FUZZ_CHECK(found, fmt::format("token {} is not a whole line of the input (in order)",
                                  printable(token)));
  }

  // The normal form (one token a line) and a decorated one parse back to the same tokens.
  for (std::string_view separator : {"\n", "\r\n", " \t\r\n#\n\n"}) {
    std::string normal = joined(tokens, separator);
    TokenFileParse again = parse_token_file(normal);
    FUZZ_CHECK(
        !again.problem && again.tokens == tokens,
        fmt::format("the tokens written one a line ({}) parse differently", printable(normal)));
  }
  std::string indented = "# comment\n";
  for (const std::string& token : tokens)
    indented += "\t " + token + " \r\n";
  FUZZ_CHECK(parse_token_file(indented).tokens == tokens, printable(indented));
}

void check_refused(std::string_view content, const TokenFileProblem& problem) {
  FUZZ_CHECK(!problem.what.empty(), "a refusal without a reason");
  if (problem.line == 0) return;
  // A precise error: the lines before the bad one are fine (or hold no token), and the bad line
  // alone is refused for the same reason.
  std::vector<std::string> lines = lines_of(content);
  FUZZ_CHECK(problem.line <= lines.size(),
             fmt::format("line {} of {}", problem.line, lines.size()));
  std::string before;
  for (std::size_t i = 0; i + 1 < problem.line; ++i)
    before += lines[i] + '\n';
  TokenFileParse prefix = parse_token_file(before);
  FUZZ_CHECK(!prefix.problem || (prefix.problem->line == 0 && prefix.tokens.empty()),
             fmt::format("the lines before line {} are refused: {}", problem.line,
                         prefix.problem ? prefix.problem->what : ""));
  TokenFileParse alone = parse_token_file(lines[problem.line - 1]);
  FUZZ_CHECK(alone.problem && alone.problem->line == 1 && alone.problem->what == problem.what,
             fmt::format("line {} ({}) alone is not refused the same way", problem.line,
                         printable(lines[problem.line - 1])));
}

}  // namespace

// The first byte is the length of a token to present to AccessTokens; the rest is the file.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  std::string_view presented = input.take(input.take_byte() % 80);
  std::string_view content = input.take_rest();

  TokenFileParse parsed = parse_token_file(content);
  Expected expected = reference_parse(content);
  FUZZ_CHECK(parsed.problem.has_value() == expected.refused,
             fmt::format("{}: parse {} but the reference {}", printable(content),
                         parsed.problem ? "refuses" : "accepts",
                         expected.refused ? "refuses" : "accepts"));
  if (parsed.problem) {
    FUZZ_CHECK(parsed.tokens.empty(), "tokens beside a refusal");
    FUZZ_CHECK(parsed.problem->line == expected.bad_line,
               fmt::format("refused at line {}, the reference says line {}", parsed.problem->line,
                           expected.bad_line));
    check_refused(content, *parsed.problem);
    return;
  }
  FUZZ_CHECK(parsed.tokens == expected.tokens,
             fmt::format("{}: the tokens differ from the reference's", printable(content)));
  check_accepted(content, parsed.tokens);

  AccessTokens access(parsed.tokens);
  FUZZ_CHECK(access.required() && access.size() == parsed.tokens.size(), "digest count");
  for (const std::string& token : parsed.tokens)
    FUZZ_CHECK(access.accepts(token), fmt::format("its own token {} refused", printable(token)));
  bool listed =
      std::find(parsed.tokens.begin(), parsed.tokens.end(), presented) != parsed.tokens.end();
  FUZZ_CHECK(access.accepts(presented) == listed,
             fmt::format("{} presented: accepts says {}, a plain comparison {}",
                         printable(presented), !listed, listed));
  // One byte more or less than a real token is a wrong token.
  const std::string& first = parsed.tokens.front();
  std::string longer = first + "x";
  std::string shorter = first.substr(0, first.size() - 1);
  for (const std::string& near : {longer, shorter})
    FUZZ_CHECK(access.accepts(near) == (std::find(parsed.tokens.begin(), parsed.tokens.end(),
                                                  near) != parsed.tokens.end()),
               printable(near));
}

}  // namespace mux::fuzz::token_file
