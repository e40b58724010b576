// Flag parsing in-process: CommandLine::parse with the output captured, one fresh CommandLine
// per case. Good values must land in the options structs; bad ones must give exit status 2 and a
// single `mux: error: ` line that names the flag.
#include <doctest/doctest.h>

#include <sstream>
#include <string>
#include <vector>

#include "cli/command_line.hpp"
#include "cli/flag_hints.hpp"
#include "cli/help_text.hpp"

namespace {

struct CommandLineFixture {
  mux::CommandLine command_line;
  std::ostringstream out;
  std::ostringstream err;

  int parse(std::vector<std::string> args) {
    args.insert(args.begin(), "mux");
    return command_line.parse(args, out, err);
  }

  [[nodiscard]] std::vector<std::string> error_lines() const {
    std::vector<std::string> found;
    std::istringstream lines(err.str());
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("mux: error: ", 0) == 0) found.push_back(line);
    }
    return found;
  }

  // Exit status 2, nothing on stdout, and exactly one error line, which mentions `needle`.
  void expect_usage_error(const std::vector<std::string>& args, const std::string& needle) {
    INFO("args: ", doctest::toString(args));
    CHECK(parse(args) == mux::kExitUsage);
    CHECK(out.str().empty());
    std::vector<std::string> errors = error_lines();
    REQUIRE(errors.size() == 1);
    INFO("error line: ", errors[0]);
    CHECK(errors[0].find(needle) != std::string::npos);
  }
};

}  // namespace

namespace doctest {
template <>
struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& values) {
    std::string shown;
    for (const std::string& value : values)
      shown += (shown.empty() ? "" : " ") + value;
    return shown.c_str();
  }
};
}  // namespace doctest

TEST_CASE_FIXTURE(CommandLineFixture, "command line: defaults") {
  REQUIRE(parse({"chat-server"}) == -1);
  CHECK(command_line.selected() == "chat-server");
  const mux::ChatServerOptions& chat = command_line.chat_server();
  CHECK(chat.common.port == 5000);
  CHECK(chat.common.host == "127.0.0.1");
  CHECK_FALSE(chat.common.verbose);
  CHECK_FALSE(chat.common.quiet);
  CHECK(chat.common.verbosity() == mux::Verbosity::normal);
  CHECK(chat.serve == mux::ServeMode::single);
  CHECK(chat.max_line == 4096);
  CHECK(chat.max_queue == 1048576);
  CHECK(chat.max_clients == 0);
  CHECK(out.str().empty());
  CHECK(err.str().empty());
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: upload-server defaults") {
  REQUIRE(parse({"upload-server"}) == -1);
  const mux::UploadServerOptions& upload = command_line.upload_server();
  CHECK(upload.common.port == 5000);
  CHECK(upload.common.host == "127.0.0.1");
  CHECK(upload.serve == mux::ServeMode::single);
  CHECK(upload.output_dir.empty());
  CHECK(upload.max_size == 0);
  CHECK(upload.max_clients == 0);
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: chat-server values land in its options") {
  REQUIRE(parse({"chat-server", "--port", "6001", "--host", "::1", "--serve", "fork", "--max-queue",
                 "2M", "--max-line", "1K", "--max-clients", "50", "-v"}) == -1);
  CHECK(command_line.selected() == "chat-server");
  const mux::ChatServerOptions& chat = command_line.chat_server();
  CHECK(chat.common.port == 6001);
  CHECK(chat.common.host == "::1");
  CHECK(chat.serve == mux::ServeMode::fork);
  CHECK(chat.max_queue == 2097152);
  CHECK(chat.max_line == 1024);
  CHECK(chat.max_clients == 50);
  CHECK(chat.common.verbose);
  CHECK(chat.common.verbosity() == mux::Verbosity::verbose);
  CHECK(err.str().empty());
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: --flag=value and explicit single") {
  REQUIRE(parse({"upload-server", "--port=0", "--serve=single", "--max-size=64KiB",
                 "--output-dir=/tmp/in", "--quiet"}) == -1);
  const mux::UploadServerOptions& upload = command_line.upload_server();
  CHECK(upload.common.port == 0);
  CHECK(upload.serve == mux::ServeMode::single);
  CHECK(upload.max_size == 65536);
  CHECK(upload.output_dir == "/tmp/in");
  CHECK(upload.common.verbosity() == mux::Verbosity::quiet);
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: a port is read as decimal") {
  REQUIRE(parse({"chat-server", "--port", "010"}) == -1);
  CHECK(command_line.chat_server().common.port == 10);  // not octal 8
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: port range ends") {
  SUBCASE("0") {
    REQUIRE(parse({"chat-server", "--port", "0"}) == -1);
    CHECK(command_line.chat_server().common.port == 0);
  }
  SUBCASE("65535") {
    REQUIRE(parse({"chat-server", "--port", "65535"}) == -1);
    CHECK(command_line.chat_server().common.port == 65535);
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: chat-client and upload-client values") {
  SUBCASE("chat-client") {
    REQUIRE(parse({"chat-client", "--nick", "ada", "--host", "localhost", "--port", "7000"}) == -1);
    CHECK(command_line.selected() == "chat-client");
    CHECK(command_line.chat_client().nick == "ada");
    CHECK(command_line.chat_client().common.host == "localhost");
    CHECK(command_line.chat_client().common.port == 7000);
  }
  SUBCASE("upload-client") {
    REQUIRE(parse({"upload-client", "--file", "test-file.txt", "--name", "stored.txt"}) == -1);
    CHECK(command_line.selected() == "upload-client");
    CHECK(command_line.upload_client().file == "test-file.txt");
    CHECK(command_line.upload_client().name == "stored.txt");
    CHECK(command_line.upload_client().common.port == 5000);
  }
  SUBCASE("upload-client from stdin") {
    REQUIRE(parse({"upload-client", "--file", "-"}) == -1);
    CHECK(command_line.upload_client().file == "-");
    CHECK(command_line.upload_client().name.empty());
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: bad values are usage errors naming the flag") {
  SUBCASE("--port notaport") {
    expect_usage_error({"chat-server", "--port", "notaport"}, "--port");
  }
  SUBCASE("--port 70000") {
    expect_usage_error({"chat-server", "--port", "70000"}, "--port");
  }
  SUBCASE("--port 65536") {
    expect_usage_error({"upload-server", "--port", "65536"}, "--port");
  }
  SUBCASE("--port -1") {
    expect_usage_error({"chat-client", "--port", "-1"}, "--port");
  }
  SUBCASE("--port 0x10") {
    expect_usage_error({"chat-server", "--port", "0x10"}, "--port");
  }
  SUBCASE("--port empty") {
    expect_usage_error({"chat-server", "--port", ""}, "--port");
  }
  SUBCASE("--port without a value") {
    expect_usage_error({"chat-server", "--port"}, "--port needs a value (PORT)");
  }
  SUBCASE("--serve bogus") {
    expect_usage_error({"chat-server", "--serve", "bogus"}, "--serve");
  }
  SUBCASE("--serve bogus on upload-server") {
    expect_usage_error({"upload-server", "--serve", "threads"}, "--serve");
  }
  SUBCASE("--max-line 0") {
    expect_usage_error({"chat-server", "--max-line", "0"}, "--max-line");
  }
  SUBCASE("--max-line garbage") {
    expect_usage_error({"chat-server", "--max-line", "lots"}, "--max-line");
  }
  SUBCASE("--max-queue below the minimum") {
    expect_usage_error({"chat-server", "--max-queue", "10"}, "--max-queue");
  }
  SUBCASE("--max-clients 0") {
    expect_usage_error({"chat-server", "--max-clients", "0"}, "--max-clients");
  }
  SUBCASE("--max-clients 0 on upload-server") {
    expect_usage_error({"upload-server", "--max-clients", "0"}, "--max-clients");
  }
  SUBCASE("--max-size 0") {
    expect_usage_error({"upload-server", "--max-size", "0"}, "--max-size");
  }
  SUBCASE("-v with -q") {
    expect_usage_error({"chat-server", "-v", "-q"}, "--verbose");
  }
  SUBCASE("--quiet with --verbose") {
    expect_usage_error({"upload-client", "--file", "f", "--quiet", "--verbose"}, "--quiet");
  }
  SUBCASE("missing --file") {
    expect_usage_error({"upload-client"}, "--file");
  }
  SUBCASE("an unknown flag") {
    expect_usage_error({"chat-server", "--colour"}, "--colour");
  }
  SUBCASE("a flag of another subcommand") {
    expect_usage_error({"chat-client", "--serve", "fork"}, "--serve");
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: an unknown subcommand: one line and a hint") {
  CHECK(parse({"chat-sever"}) == mux::kExitUsage);
  CHECK(out.str().empty());
  CHECK(err.str() ==
        "mux: error: unknown subcommand 'chat-sever' (did you mean 'chat-server'?)\n"
        "Try 'mux --help' for more information.\n");
  CHECK(command_line.selected().empty());
}

TEST_CASE_FIXTURE(CommandLineFixture,
                  "command line: a usage error ends with the subcommand's hint") {
  CHECK(parse({"chat-server", "--max-lines", "5"}) == mux::kExitUsage);
  CHECK(err.str() ==
        "mux: error: unknown flag '--max-lines' (did you mean '--max-line'?)\n"
        "Try 'mux chat-server --help' for more information.\n");
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: size and count flags have upper bounds") {
  SUBCASE("--max-line 2^64-1") {
    expect_usage_error({"chat-server", "--max-line", "18446744073709551615"},
                       "--max-line: 18446744073709551615 is above the maximum of 1M");
  }
  SUBCASE("--max-line 1T") {
    expect_usage_error({"chat-server", "--max-line", "1T"}, "is above the maximum of 1M");
  }
  SUBCASE("--max-queue 2G") {
    expect_usage_error({"chat-server", "--max-queue", "2G"}, "is above the maximum of 1G");
  }
  SUBCASE("--max-size 1025T") {
    expect_usage_error({"upload-server", "--max-size", "1025T"}, "is above the maximum of 1024T");
  }
  SUBCASE("--max-clients past 2^64") {
    expect_usage_error({"upload-server", "--max-clients", "99999999999999999999999"},
                       "is above the maximum of 10000000");
  }
  SUBCASE("the largest values are accepted") {
    REQUIRE(parse({"chat-server", "--max-line", "1M", "--max-queue", "1G", "--max-clients",
                   "10000000"}) == -1);
    CHECK(command_line.chat_server().max_line == 1048576);
    CHECK(command_line.chat_server().max_queue == 1073741824);
    CHECK(command_line.chat_server().max_clients == 10000000);
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: a flag given twice takes the last value") {
  REQUIRE(parse({"chat-server", "--port", "1", "--port", "2", "-v", "-v"}) == -1);
  CHECK(command_line.chat_server().common.port == 2);
  CHECK(command_line.chat_server().common.verbose);
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: -V is --version") {
  CHECK(parse({"-V"}) == mux::kExitSuccess);
  CHECK(out.str() == "mux " MUX_VERSION "\n");
}

TEST_CASE("command line: help that cannot be written is a failure") {
  mux::CommandLine command_line;
  std::ostream broken(nullptr);  // no buffer: every write fails
  std::ostringstream err;
  CHECK(command_line.parse({"mux", "--help"}, broken, err) == mux::kExitFailure);
  CHECK(err.str().rfind("mux: error: standard output: ", 0) == 0);
}

TEST_CASE("edit distance") {
  CHECK(mux::edit_distance("", "") == 0);
  CHECK(mux::edit_distance("--colour", "--color") == 1);
  CHECK(mux::edit_distance("abc", "") == 3);
  CHECK(mux::edit_distance("chat-sever", "chat-server") == 1);
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: no subcommand: usage on stderr, status 2") {
  CHECK(parse({}) == mux::kExitUsage);
  CHECK(out.str().empty());
  CHECK(error_lines().size() == 1);
  CHECK(err.str().find("Usage: mux") != std::string::npos);
  for (const char* sub : {"chat-server", "chat-client", "upload-server", "upload-client"}) {
    CHECK(err.str().find(sub) != std::string::npos);
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: --help lists the subcommands") {
  CHECK(parse({"--help"}) == mux::kExitSuccess);
  CHECK(err.str().empty());
  for (const char* text :
       {"--help", "--version", "chat-server", "chat-client", "upload-server", "upload-client"}) {
    INFO(text);
    CHECK(out.str().find(text) != std::string::npos);
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: <sub> --help lists every flag") {
  struct Expected {
    const char* subcommand;
    std::vector<std::string> flags;
  };
  const std::vector<std::string> common = {"--host", "--port", "--verbose", "--quiet"};
  auto with_common = [&](std::vector<std::string> flags) {
    flags.insert(flags.end(), common.begin(), common.end());
    return flags;
  };
  Expected expected[] = {
      {"chat-server", with_common({"--serve", "--max-clients", "--max-line", "--max-queue"})},
      {"chat-client", with_common({"--nick"})},
      {"upload-server", with_common({"--serve", "--output-dir", "--max-size", "--max-clients"})},
      {"upload-client", with_common({"--file", "--name"})},
  };
  for (const Expected& each : expected) {
    mux::CommandLine fresh;
    std::ostringstream help_out;
    std::ostringstream help_err;
    INFO(each.subcommand);
    CHECK(fresh.parse({"mux", each.subcommand, "--help"}, help_out, help_err) == mux::kExitSuccess);
    CHECK(help_err.str().empty());
    for (const std::string& flag : each.flags) {
      INFO(flag);
      CHECK(help_out.str().find(flag) != std::string::npos);
    }
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: --help wins over a missing required flag") {
  CHECK(parse({"upload-client", "--help"}) == mux::kExitSuccess);
  CHECK(out.str().find("--file") != std::string::npos);
  CHECK(err.str().empty());
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: --version") {
  CHECK(parse({"--version"}) == mux::kExitSuccess);
  CHECK(out.str() == "mux " MUX_VERSION "\n");
  CHECK(err.str().empty());
}

TEST_CASE("--max-clients is read as decimal, as --port is") {
  for (const char* sub : {"chat-server", "upload-server"}) {
    mux::CommandLine command_line;
    std::ostringstream out;
    std::ostringstream err;
    CHECK(command_line.parse({"mux", sub, "--max-clients", "010"}, out, err) == -1);
    std::uint64_t parsed = std::string(sub) == "chat-server"
                               ? command_line.chat_server().max_clients
                               : command_line.upload_server().max_clients;
    CHECK(parsed == 10);
  }
}

// Issue 24: one duration syntax for every time flag: a bare number is seconds, or ms, s, m, h.
TEST_CASE_FIXTURE(CommandLineFixture, "command line: every time flag takes the same durations") {
  using std::chrono::milliseconds;
  SUBCASE("chat-server") {
    REQUIRE(parse({"chat-server", "--keepalive", "2m", "--flood-timeout", "1500ms"}) == -1);
    CHECK(command_line.chat_server().keepalive == milliseconds{120'000});
    CHECK(command_line.chat_server().flood_timeout == milliseconds{1500});
  }
  SUBCASE("upload-server") {
    REQUIRE(parse({"upload-server", "--header-timeout", "1500ms", "--idle-timeout", "1m"}) == -1);
    CHECK(command_line.upload_server().header_timeout == milliseconds{1500});
    CHECK(command_line.upload_server().idle_timeout == milliseconds{60'000});
  }
  SUBCASE("upload-client") {
    REQUIRE(parse({"upload-client", "--file", "-", "--timeout", "1h", "--connect-timeout",
                   "250ms"}) == -1);
    CHECK(command_line.upload_client().timeout == milliseconds{3'600'000});
    CHECK(command_line.upload_client().link.connect_timeout == milliseconds{250});
  }
  SUBCASE("a bare number is seconds, 0 turns a timeout off") {
    REQUIRE(parse({"upload-server", "--header-timeout", "7", "--idle-timeout", "0"}) == -1);
    CHECK(command_line.upload_server().header_timeout == milliseconds{7000});
    CHECK(command_line.upload_server().idle_timeout == milliseconds{0});
  }
  SUBCASE("the same refusal on a chat flag") {
    expect_usage_error({"chat-server", "--keepalive", "2 m"},
                       "--keepalive: '2 m' is not a duration");
  }
  SUBCASE("the same refusal on an upload flag") {
    expect_usage_error({"upload-server", "--idle-timeout", "1.5s"},
                       "--idle-timeout: '1.5s' is not a duration");
  }
  SUBCASE("below the minimum") {
    expect_usage_error({"chat-server", "--flood-timeout", "500ms"},
                       "--flood-timeout: 500ms is below the minimum of 1s");
  }
  SUBCASE("above the maximum") {
    expect_usage_error({"upload-server", "--header-timeout", "25h"},
                       "--header-timeout: 25h is above the maximum of 24h");
  }
}

TEST_CASE_FIXTURE(CommandLineFixture, "command line: flags that need each other are usage errors") {
  SUBCASE("server --tls-cert alone") {
    expect_usage_error({"chat-server", "--tls-cert", "c.pem"}, "--tls-cert c.pem: needs --tls-key");
  }
  SUBCASE("server --tls-key alone") {
    expect_usage_error({"upload-server", "--tls-key", "k.pem"}, "--tls-key needs --tls-cert");
  }
  SUBCASE("client --tls-key alone") {
    expect_usage_error({"chat-client", "--tls-key", "k.pem"}, "a client certificate needs both");
  }
  SUBCASE("a bad pin") {
    expect_usage_error({"upload-client", "--file", "-", "--tls-pin", "sha1:00"},
                       "--tls-pin: 'sha1:00' is not a pin");
  }
  SUBCASE("--redis-tls-ca without rediss://") {
    expect_usage_error({"chat-server", "--redis-tls-ca", "ca.pem"},
                       "--redis-tls-ca: needs --redis rediss://");
  }
  CHECK(err.str().find("Try 'mux ") != std::string::npos);
}

// The pieces split out of CommandLine (issue 20): --help's wrapping and the unknown-flag hints.
TEST_CASE("help text: wrapped at spaces, a '-' word never starts a continuation line") {
  CHECK(mux::wrap_help("one two three", 7) == std::vector<std::string>{"one two", "three"});
  CHECK(mux::wrap_help("averyveryverylongword x", 5) ==
        std::vector<std::string>{"averyveryverylongword", "x"});
  // "--flag" would start the second line: the word before it goes along.
  CHECK(mux::wrap_help("see also --flag", 9) == std::vector<std::string>{"see", "also --flag"});
  CHECK(mux::wrap_help("a\x01"
                       "b c",
                       3) == std::vector<std::string>{"a\x01"
                                                      "b",
                                                      "c"});
}

TEST_CASE("help text: the program's lists every subcommand, a subcommand's every flag") {
  mux::AllOptions options;
  std::vector<mux::Subcommand> table = mux::make_subcommands(options);
  std::string program = mux::program_help_text(table);
  for (const mux::Subcommand& subcommand : table) {
    CHECK(program.find("  " + subcommand.name + " ") != std::string::npos);
    std::string help = mux::subcommand_help_text(subcommand);
    CHECK(help.rfind("Usage: mux " + subcommand.name + " [OPTIONS]\n", 0) == 0);
    CHECK(help.find('\x01') == std::string::npos);
    for (const mux::FlagSpec& spec : subcommand.flags.specs())
      CHECK(help.find(spec.long_name) != std::string::npos);
  }
}

TEST_CASE("flag hints: a likely typo, the subcommand that takes the flag, or neither") {
  CHECK(mux::closest_name("--colour", {"--color", "--help"}) == "--color");
  CHECK(mux::closest_name("--zzzzzz", {"--color", "--help"}).empty());
  mux::AllOptions options;
  std::vector<mux::Subcommand> table = mux::make_subcommands(options);
  const mux::Subcommand* chat_server = nullptr;
  for (const mux::Subcommand& subcommand : table) {
    if (subcommand.name == "chat-server") chat_server = &subcommand;
  }
  REQUIRE(chat_server != nullptr);
  CHECK(mux::unknown_flag_message("--versoin", table, nullptr) ==
        "unknown flag '--versoin' (did you mean '--version'?)");
  CHECK(mux::unknown_flag_message("--nothing-like-it=3", table, nullptr) ==
        "unknown flag '--nothing-like-it'");
  CHECK(mux::unknown_flag_message("--output-dir=/tmp", table, chat_server) ==
        "chat-server takes no flag '--output-dir' (that is a flag of upload-server)");
}
