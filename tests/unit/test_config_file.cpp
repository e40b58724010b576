// --config FILE: the pure parse of the text (cli/config_file.hpp), then CommandLine applying a
// real file: precedence (the command line wins), repeatable settings, switches, and every usage
// error naming FILE:LINE.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command_line.hpp"
#include "cli/config_file.hpp"

namespace {

// A config file in a fresh temporary directory, removed with the object.
struct TempConfig {
  std::string dir;
  std::string path;

  explicit TempConfig(const std::string& text) {
    char pattern[] = "/tmp/mux-config-unit-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    dir = pattern;
    path = dir + "/chat.conf";
    std::ofstream(path) << text;
  }
  TempConfig(const TempConfig&) = delete;
  TempConfig& operator=(const TempConfig&) = delete;
  ~TempConfig() {
    std::remove(path.c_str());
    ::rmdir(dir.c_str());
  }
};

struct ConfigFixture {
  mux::CommandLine command_line;
  std::ostringstream out;
  std::ostringstream err;

  int parse(std::vector<std::string> args) {
    args.insert(args.begin(), "mux");
    return command_line.parse(args, out, err);
  }

  // Status 2 and a first line on stderr that starts with `prefix` (the reason after it is the
  // flag's own wording, tested with the flags).
  void expect_error_prefix(const std::vector<std::string>& args, const std::string& prefix) {
    CHECK(parse(args) == mux::kExitUsage);
    CHECK(out.str().empty());
    std::string first = err.str().substr(0, err.str().find('\n'));
    INFO("error line: ", first);
    CHECK(first.rfind(prefix, 0) == 0);
  }

  // Status 2 and exactly this first line on stderr.
  void expect_error(const std::vector<std::string>& args, const std::string& line) {
    CHECK(parse(args) == mux::kExitUsage);
    CHECK(out.str().empty());
    std::string first = err.str().substr(0, err.str().find('\n'));
    CHECK(first == line);
  }
};

}  // namespace

TEST_CASE("config text: settings, comments, blanks and line numbers") {
  mux::ConfigParse parse = mux::parse_config_text(
      "# a comment\n"
      "\n"
      "port = 7000\n"
      "  host=::1  \r\n"
      "\t# indented comment\n"
      "allow = 10.0.0.0/8\n"
      "allow = 192.168.0.0/16\n"
      "token-file = /etc/mux/a#b\n"
      "empty =\n"
      "last = no newline");
  REQUIRE(parse.error.empty());
  REQUIRE(parse.settings.size() == 7);
  CHECK(parse.settings[0].name == "port");
  CHECK(parse.settings[0].value == "7000");
  CHECK(parse.settings[0].line == 3);
  CHECK(parse.settings[1].name == "host");
  CHECK(parse.settings[1].value == "::1");
  CHECK(parse.settings[1].line == 4);
  CHECK(parse.settings[2].value == "10.0.0.0/8");
  CHECK(parse.settings[3].value == "192.168.0.0/16");
  CHECK(parse.settings[3].line == 7);
  CHECK(parse.settings[4].value == "/etc/mux/a#b");  // '#' inside a value is kept
  CHECK(parse.settings[5].name == "empty");
  CHECK(parse.settings[5].value.empty());
  CHECK(parse.settings[6].value == "no newline");
  CHECK(parse.settings[6].line == 10);
}

TEST_CASE("config text: an empty file has no settings") {
  CHECK(mux::parse_config_text("").settings.empty());
  CHECK(mux::parse_config_text("\n\n# only comments\n").error.empty());
}

TEST_CASE("config text: a line that is not a setting stops the parse at that line") {
  SUBCASE("no '='") {
    mux::ConfigParse parse = mux::parse_config_text("port = 1\nverbose\n");
    CHECK(parse.error == "'verbose' is not a setting (expected 'name = value')");
    CHECK(parse.error_line == 2);
  }
  SUBCASE("no name") {
    mux::ConfigParse parse = mux::parse_config_text("= 5\n");
    CHECK(parse.error == "a setting without a name (expected 'name = value')");
    CHECK(parse.error_line == 1);
  }
  SUBCASE("a name with a space") {
    mux::ConfigParse parse = mux::parse_config_text("\n\nmax line = 5\n");
    CHECK(parse.error == "'max line' is not a setting name (letters, digits and '-')");
    CHECK(parse.error_line == 3);
  }
  SUBCASE("control bytes are shown escaped") {
    mux::ConfigParse parse = mux::parse_config_text(std::string("\x01\x7f", 2) + "\n");
    CHECK(parse.error == "'\\x01\\x7f' is not a setting (expected 'name = value')");
  }
  SUBCASE("a NUL byte") {
    mux::ConfigParse parse = mux::parse_config_text(std::string("port = 1\0", 9));
    CHECK(parse.error == "a NUL byte (not a text file?)");
  }
}

TEST_CASE_FIXTURE(ConfigFixture, "config: settings land in the options") {
  TempConfig file(
      "port = 7001\nhost = ::1\nserve = fork\nmax-line = 1K\nverbose = yes\n"
      "allow = 10.0.0.0/8\nallow = 127.0.0.1\nhistory = 5\n");
  REQUIRE(parse({"chat-server", "--config", file.path}) == -1);
  const mux::ChatServerOptions& chat = command_line.chat_server();
  CHECK(chat.common.port == 7001);
  CHECK(chat.common.host == "::1");
  CHECK(chat.serve == mux::ServeMode::fork);
  CHECK(chat.max_line == 1024);
  CHECK(chat.common.verbose);
  CHECK(chat.history == 5);
  CHECK_FALSE(chat.access.addresses.empty());
  CHECK(err.str().empty());
}

TEST_CASE_FIXTURE(ConfigFixture, "config: the command line wins over the file") {
  TempConfig file("port = 7001\nmax-line = 1K\nquiet = true\nhost = ::1\n");
  SUBCASE("a value") {
    REQUIRE(parse({"chat-server", "--port", "7002", "--config", file.path}) == -1);
    CHECK(command_line.chat_server().common.port == 7002);
    CHECK(command_line.chat_server().max_line == 1024);  // the file's, not overridden
    CHECK(command_line.chat_server().common.host == "::1");
  }
  SUBCASE("given after --config too") {
    REQUIRE(parse({"chat-server", "--config", file.path, "--max-line=2K"}) == -1);
    CHECK(command_line.chat_server().max_line == 2048);
    CHECK(command_line.chat_server().common.port == 7001);
  }
  SUBCASE("an exclusive group: -v on the command line beats quiet in the file") {
    REQUIRE(parse({"chat-server", "-v", "--config", file.path}) == -1);
    CHECK(command_line.chat_server().common.verbose);
    CHECK_FALSE(command_line.chat_server().common.quiet);
  }
}

TEST_CASE_FIXTURE(ConfigFixture, "config: a bad value is an error even when overridden") {
  TempConfig file("port = 7001\nmax-line = lots\n");
  expect_error_prefix({"chat-server", "--max-line", "1K", "--config", file.path},
                      "mux: error: " + file.path + ":2: max-line: 'lots' ");
  CHECK(err.str().find("is not a size") != std::string::npos);
}

TEST_CASE_FIXTURE(ConfigFixture,
                  "config: repeatable settings on the command line replace the file's") {
  TempConfig file("deny = 10.0.0.0/8\n");
  auto allowed = [](const mux::AddressFilter& filter, const char* address) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, address, &in.sin_addr) == 1);
    return filter.allows(reinterpret_cast<const sockaddr*>(&in));
  };
  SUBCASE("the file's alone") {
    REQUIRE(parse({"upload-server", "--config", file.path}) == -1);
    const mux::AddressFilter& filter = command_line.upload_server().access.addresses;
    CHECK_FALSE(allowed(filter, "10.1.2.3"));
    CHECK(allowed(filter, "192.168.1.1"));
  }
  SUBCASE("the command line's instead") {
    REQUIRE(parse({"upload-server", "--deny", "192.168.0.0/16", "--config", file.path}) == -1);
    const mux::AddressFilter& filter = command_line.upload_server().access.addresses;
    CHECK(allowed(filter, "10.1.2.3"));
    CHECK_FALSE(allowed(filter, "192.168.1.1"));
  }
}

TEST_CASE_FIXTURE(ConfigFixture, "config: a required flag may come from the file") {
  TempConfig file("file = /etc/hostname\nname = stored.txt\n");
  REQUIRE(parse({"upload-client", "--config", file.path}) == -1);
  CHECK(command_line.upload_client().file == "/etc/hostname");
  CHECK(command_line.upload_client().name == "stored.txt");
}

TEST_CASE_FIXTURE(ConfigFixture, "config: every error names the file and the line") {
  SUBCASE("unknown setting with a suggestion") {
    TempConfig file("port = 1\n\n# x\n\n\n\nmax-lines = 5\n");
    expect_error(
        {"chat-server", "--config", file.path},
        "mux: error: " + file.path + ":7: unknown setting 'max-lines' (did you mean 'max-line'?)");
  }
  SUBCASE("a flag name with its dashes") {
    TempConfig file("--port = 1\n");
    expect_error(
        {"chat-server", "--config", file.path},
        "mux: error: " + file.path + ":1: unknown setting '--port' (did you mean 'port'?)");
  }
  SUBCASE("a setting of another subcommand") {
    TempConfig file("output-dir = /tmp\n");
    expect_error({"chat-server", "--config", file.path},
                 "mux: error: " + file.path +
                     ":1: unknown setting 'output-dir' (chat-server takes no such setting; "
                     "upload-server does)");
  }
  SUBCASE("unknown and nothing close") {
    TempConfig file("colour = blue\n");
    expect_error({"chat-server", "--config", file.path},
                 "mux: error: " + file.path + ":1: unknown setting 'colour'");
  }
  SUBCASE("a short name is not a setting") {
    TempConfig file("v = true\n");
    expect_error({"chat-server", "--config", file.path},
                 "mux: error: " + file.path + ":1: unknown setting 'v'");
  }
  SUBCASE("a bad value") {
    TempConfig file("port = 70000\n");
    expect_error_prefix({"chat-server", "--config", file.path},
                        "mux: error: " + file.path + ":1: port: '70000' is not a port number");
  }
  SUBCASE("a value out of range") {
    TempConfig file("max-line = 2M\n");
    expect_error_prefix({"chat-server", "--config", file.path},
                        "mux: error: " + file.path + ":1: max-line: ");
    CHECK(err.str().find("2M") != std::string::npos);
    CHECK(err.str().find("1M") != std::string::npos);
  }
  SUBCASE("a bad choice") {
    TempConfig file("serve = threads\n");
    expect_error_prefix({"upload-server", "--config", file.path},
                        "mux: error: " + file.path + ":1: serve: 'threads' is not a serving mode");
  }
  SUBCASE("a bad repeated value") {
    TempConfig file("allow = 10.0.0.0/8\nallow = nowhere\n");
    expect_error_prefix({"chat-server", "--config", file.path},
                        "mux: error: " + file.path + ":2: allow: 'nowhere' ");
  }
  SUBCASE("no value") {
    TempConfig file("port =\n");
    expect_error({"chat-server", "--config", file.path},
                 "mux: error: " + file.path + ":1: port: needs a value (PORT)");
  }
  SUBCASE("a switch that is not true or false") {
    TempConfig file("verbose = very\n");
    expect_error({"chat-server", "--config", file.path},
                 "mux: error: " + file.path +
                     ":1: verbose: 'very' is not true or false (a switch: true, false, yes, no, "
                     "on, off, 1 or 0)");
  }
  SUBCASE("set twice") {
    TempConfig file("port = 1\nhost = ::1\nport = 2\n");
    expect_error({"chat-server", "--config", file.path},
                 "mux: error: " + file.path +
                     ":3: 'port' is set twice (first on line 1); only a repeatable flag's "
                     "setting may repeat");
  }
  SUBCASE("two of an exclusive group") {
    TempConfig file("verbose = true\nquiet = true\n");
    expect_error(
        {"chat-server", "--config", file.path},
        "mux: error: " + file.path + ":2: 'quiet' and 'verbose' (line 1) cannot be used together");
  }
  SUBCASE("config and check are not settings") {
    TempConfig file("check = true\n");
    expect_error(
        {"chat-server", "--config", file.path},
        "mux: error: " + file.path + ":1: 'check' is a command-line flag only, not a setting");
  }
  SUBCASE("a syntax error") {
    TempConfig file("port 7000\n");
    expect_error(
        {"chat-server", "--config", file.path},
        "mux: error: " + file.path + ":1: 'port 7000' is not a setting (expected 'name = value')");
  }
}

TEST_CASE_FIXTURE(ConfigFixture, "config: a file that cannot be read") {
  expect_error({"chat-server", "--config", "/nonexistent/mux.conf"},
               "mux: error: --config /nonexistent/mux.conf: No such file or directory");
}
