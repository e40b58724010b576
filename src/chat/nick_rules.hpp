// NickRules: whether a nick can be told apart from the others in the room. Built on ICU's spoof
// checker (UTS #39, Unicode Security Mechanisms): two nicks collide when their confusable
// skeletons match after case folding and with punctuation and spaces removed ("аlice" with a
// Cyrillic "а" is "alice"; "CIient_1" is "Client 1"), and a single nick is refused when it
// mixes scripts beyond what UTS #39 calls highly restrictive, hides marks (the same combining
// mark twice, or more than kMaxMarksPerCharacter on one character) or mixes digit systems.
// ChatRoom owns one and asks it about every /nick; the basic form (length, UTF-8, no spaces or
// invisible characters) is chat::nick_problem's job, which runs first.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct USpoofChecker;

namespace mux::chat {

class NickRules {
 public:
  // "a" plus ten different accents renders as an unreadable smear that hides what is beneath.
  static constexpr std::size_t kMaxMarksPerCharacter = 2;

  // Throws std::runtime_error when ICU cannot load its data.
  NickRules();
  NickRules(const NickRules&) = delete;
  NickRules& operator=(const NickRules&) = delete;
  ~NickRules();

  // Why a well-formed nick (chat::nick_problem found nothing) is still refused, or nullopt.
  [[nodiscard]] std::optional<std::string> problem(std::string_view nick) const;
  // Nicks with equal keys look alike; the room allows one nick per key.
  [[nodiscard]] std::string look_alike_key(std::string_view nick) const;

 private:
  struct CloseChecker {
    void operator()(USpoofChecker* checker) const noexcept;
  };
  [[nodiscard]] bool poses_as_default_name(const std::string& key) const;

  std::unique_ptr<USpoofChecker, CloseChecker> checker_;
  std::string default_name_key_;         // the key of "Client"
  std::vector<std::string> digit_keys_;  // the keys of "0".."9" ("0" looks like "o")
};

}  // namespace mux::chat
