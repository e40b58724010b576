#include "chat/client_terminal.hpp"

#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <ctime>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"

namespace mux {
namespace {

constexpr std::size_t kReadBytes = 64 * 1024;

void write_stdout(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(STDOUT_FILENO, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write to stdout");
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

void write_stderr(std::string_view text) {
  fmt::print(stderr, "{}", text);
}

}  // namespace

ClientScreen::ClientScreen(bool timestamps, Writer out, Writer err)
    : timestamps_(timestamps),
      out_(out ? std::move(out) : Writer(write_stdout)),
      err_(err ? std::move(err) : Writer(write_stderr)) {}

std::string_view ClientScreen::room_line(std::string_view line, bool cut) {
  append_timestamp();
  std::size_t start = shown_.size();
  chat::append_sanitized(shown_, line, cut);
  std::size_t length = shown_.size() - start;
  // The rest of a line over kMaxLine was dropped unread: say so rather than show a part as the
  // whole.
  if (cut) shown_ += kCutMark;
  shown_ += '\n';
  return std::string_view(shown_).substr(start, length);
}

void ClientScreen::notice(const std::string& text) {
  if (!terminal_) return err_(fmt::format("mux: {}\n", text));
  shown_ += "* ";
  shown_ += text;
  shown_ += '\n';
  flush();
}

void ClientScreen::own_line(std::string_view line, std::string_view nick) {
  if (!terminal_ || line.empty()) return;
  append_timestamp();
  if (line.starts_with("/") && !line.starts_with("//")) {
    shown_ += kPrompt;
    chat::append_sanitized(shown_, line);
  } else {
    if (line.starts_with("//")) line.remove_prefix(1);  // the server strips the escape too
    shown_ += '[';
    shown_ += nick.empty() ? std::string_view("you") : nick;
    shown_ += "]: ";
    chat::append_sanitized(shown_, line);
  }
  shown_ += '\n';
  flush();
}

void ClientScreen::flush() {
  if (shown_.empty()) return;
  if (terminal_) {
    terminal_(shown_);
  } else {
    out_(shown_);
  }
  shown_.clear();
}

// --timestamps: the local time a line was shown, "HH:MM:SS ".
void ClientScreen::append_timestamp() {
  if (!timestamps_) return;
  std::time_t now = std::time(nullptr);
  std::tm local{};
  if (::localtime_r(&now, &local) == nullptr) return;
  char stamp[16];
  std::size_t length = std::strftime(stamp, sizeof stamp, "%H:%M:%S ", &local);
  shown_.append(stamp, length);
}

ClientInput::ClientInput(EventLoop& loop, ClientScreen& screen, Events& events)
    : loop_(loop),
      screen_(screen),
      events_(events),
      kind_(kind_of_stdin()),
      read_buffer_(kReadBytes) {}

ClientInput::Kind ClientInput::kind_of_stdin() {
  if (::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO)) return Kind::terminal;
  struct stat info {};
  if (::fstat(STDIN_FILENO, &info) < 0) return Kind::file;
  if (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode) || ::isatty(STDIN_FILENO))
    return Kind::pollable;
  return Kind::file;
}

void ClientInput::start() {
  if (kind_ != Kind::terminal) return;
  editor_ =
      std::make_unique<LineEditor>(ClientScreen::kPrompt, [this](std::optional<std::string> line) {
        if (line) return events_.typed_line(*line);
        events_.input_ended();
      });
  editor_->set_completer(
      [this](std::string_view before_cursor) { return events_.complete(before_cursor); });
  screen_.set_terminal([this](std::string_view text) { editor_->print_above(text); });
  loop_.on_signal(SIGWINCH, [this] {
    if (editor_) editor_->resize();
  });
}

void ClientInput::resume() {
  if (closed_ || watched_) return;
  if (kind_ == Kind::file) {
    pump_timer_ = loop_.add_timer(std::chrono::milliseconds{0}, [this] {
      pump_timer_ = 0;
      read();
    });
    return;
  }
  watched_ = true;
  loop_.watch(STDIN_FILENO, EPOLLIN, [this](std::uint32_t events) {
    if (editor_ && !(events & (EPOLLHUP | EPOLLERR))) return editor_->read_input();
    if (editor_) return events_.input_ended();
    read();
  });
}

void ClientInput::pause() {
  if (watched_) loop_.unwatch(STDIN_FILENO);
  watched_ = false;
  loop_.cancel_timer(std::exchange(pump_timer_, 0));
}

void ClientInput::close() {
  closed_ = true;
  pause();
  loop_.defer([this] { drop_editor(); });  // not from inside the editor's own callback
}

void ClientInput::release() {
  drop_editor();
}

void ClientInput::drop_editor() {
  if (!editor_) return;
  screen_.set_terminal({});
  editor_.reset();
}

void ClientInput::read() {
  ssize_t n = ::read(STDIN_FILENO, read_buffer_.data(), read_buffer_.size());
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    typed_.flush_partial([this](std::string_view line, bool) { events_.typed_line(line); });
    return events_.input_ended();
  }
  typed_.feed(std::string_view(read_buffer_.data(), static_cast<std::size_t>(n)),
              [this](std::string_view line, bool) { events_.typed_line(line); });
  if (closed_) return;
  if (!events_.keep_reading()) return pause();
  if (kind_ == Kind::file) {
    watched_ = false;
    resume();
  }
}

}  // namespace mux
