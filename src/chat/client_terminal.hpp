// chat-client's front-end: what it reads from the user and what it shows, apart from the
// connection and its protocol (chat/chat_client.cpp).
//
// ClientScreen gathers what is to be shown and writes it in one go: the room's lines (sanitized,
// a cut one marked), the client's own notices and, on a terminal, the lines the user sent (the
// editor took them off the screen, so they come back as the room sees them). In a pipe the
// room's lines go to stdout and the notices to stderr, so stdout carries only what the room said;
// on a terminal both go above the prompt.
//
// ClientInput reads stdin in whichever of three ways it can: a terminal through LineEditor
// (history, Tab), a pipe or socket through the event loop, a regular file or /dev/null (which
// epoll refuses) in chunks from a timer. It hands over typed lines and the end of input, and
// asks after each read of a pipe or file whether to go on (the client pauses it while lines
// cannot go out, and resumes it).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chat/line_editor.hpp"
#include "chat/room_roster.hpp"
#include "core/base/line_framer.hpp"
#include "core/loop/event_loop.hpp"

namespace mux {

class ClientScreen {
 public:
  using Writer = std::function<void(std::string_view)>;
  // Longest line shown; a server's longer lines are cut here and marked.
  static constexpr std::size_t kMaxLine = 1 << 20;
  static constexpr std::string_view kCutMark = " [line cut at 1 MiB]";
  static constexpr const char* kPrompt = "> ";

  // `timestamps`: --timestamps (each line shown starts with the local time, "HH:MM:SS ").
  // The writers default to stdout and stderr.
  explicit ClientScreen(bool timestamps, Writer out = {}, Writer err = {});

  // A terminal's editor now shows everything above its prompt (null: a pipe again).
  void set_terminal(Writer above_prompt) { terminal_ = std::move(above_prompt); }
  [[nodiscard]] bool on_terminal() const noexcept { return static_cast<bool>(terminal_); }

  // A line the server sent (made safe to show: nothing reaches the terminal raw). Returns the
  // text as shown, without the time and cut mark, valid until the next call.
  std::string_view room_line(std::string_view line, bool cut);
  // A notice of the client's own ("* TEXT" above the prompt; "mux: TEXT" on stderr in a pipe).
  void notice(const std::string& text);
  // On a terminal, the line the user sent as the room sees it: "[NICK]: text" ("you" before the
  // welcome named us), a command as typed after the prompt. Nothing in a pipe.
  void own_line(std::string_view line, std::string_view nick);
  // Writes what was gathered.
  void flush();

 private:
  void append_timestamp();

  bool timestamps_;
  Writer out_;
  Writer err_;
  Writer terminal_;
  std::string shown_;
};

class ClientInput {
 public:
  class Events {
   public:
    // A line typed (or read), without its newline.
    virtual void typed_line(std::string_view line) = 0;
    // The end of input: end of file, Ctrl-D, or the terminal hung up.
    virtual void input_ended() = 0;
    // After a read of a pipe or file: false pauses reading until resume().
    virtual bool keep_reading() = 0;
    // Tab on a terminal, given the text before the cursor.
    virtual chat::Completion complete(std::string_view before_cursor) = 0;

   protected:
    ~Events() = default;
  };

  ClientInput(EventLoop& loop, ClientScreen& screen, Events& events);
  ClientInput(const ClientInput&) = delete;
  ClientInput& operator=(const ClientInput&) = delete;

  // Sets up the terminal's editor when stdin and stdout are one; then resume() reads.
  void start();
  void resume();
  void pause();
  // Nothing more is read; the editor gives the terminal back (after the current callback).
  void close();
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  [[nodiscard]] bool interactive() const noexcept { return editor_ != nullptr; }
  // The loop has ended: the terminal is given back now, before any last words on stderr.
  void release();

 private:
  enum class Kind {
    terminal,  // stdin and stdout are a terminal: libedit
    pollable,  // a pipe, socket or terminal that epoll can watch
    file,      // a regular file or /dev/null: epoll refuses these; read them in chunks
  };
  static Kind kind_of_stdin();
  void read();
  void drop_editor();

  EventLoop& loop_;
  ClientScreen& screen_;
  Events& events_;
  Kind kind_;
  std::unique_ptr<LineEditor> editor_;
  LineFramer typed_{ClientScreen::kMaxLine};
  std::vector<char> read_buffer_;
  EventLoop::TimerId pump_timer_ = 0;
  bool watched_ = false;
  bool closed_ = false;
};

}  // namespace mux
