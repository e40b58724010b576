// What both upload serve modes share: when a connection without its header may be shed, how
// often expired partials are swept, and the admission policy the flags make, exactly.
#include <doctest/doctest.h>

#include <chrono>
#include <limits>
#include <string>

#include "upload/upload_serving.hpp"

using namespace std::chrono_literals;

TEST_CASE("a connection without its header is shed after 2 s, or half of a shorter timeout") {
  CHECK(mux::pre_header_shed_after(10s) == 2000ms);
  CHECK(mux::pre_header_shed_after(4s) == 2000ms);
  CHECK(mux::pre_header_shed_after(3s) == 1500ms);
  CHECK(mux::pre_header_shed_after(0ms) == 2000ms);  // no header timeout
}

TEST_CASE("expired partials are swept every quarter of --keep-partial, within 1 s and 10 min") {
  CHECK(mux::partial_sweep_interval(40s) == 10s);
  CHECK(mux::partial_sweep_interval(2s) == 1s);
  CHECK(mux::partial_sweep_interval(std::chrono::hours{1}) == std::chrono::minutes{10});
}

TEST_CASE("the admission policy: shedding at the cap, a pre-header budget per address") {
  mux::UploadAdmission admission;
  admission.max_per_address = 32;
  admission.shed_after = 1500ms;
  bool room = true;
  mux::AdmissionPolicy policy = mux::upload_admission_policy(admission, [&room] { return room; });
  CHECK(policy.max_per_address == 32);
  CHECK(policy.shed_at_owner_cap);
  CHECK(policy.max_unauthenticated == std::numeric_limits<std::size_t>::max());
  CHECK(policy.max_unauthenticated_per_address == 4);  // an eighth
  CHECK(policy.shed_after == 1500ms);
  CHECK(policy.pending_kind == "connection without a complete header");
  REQUIRE(policy.has_room);
  CHECK(policy.has_room());
  room = false;
  CHECK_FALSE(policy.has_room());
  CHECK(policy.refusal_message(mux::Refusal::too_many_from_address) ==
        "ERR server busy: too many connections from your address\n");
  CHECK(policy.refusal_message(mux::Refusal::not_allowed) == "ERR refused: address not allowed\n");
  CHECK(policy.refusal_message(mux::Refusal::server_full) ==
        "ERR server busy: too many uploads at once\n");

  admission.max_per_address = 8;
  CHECK(mux::upload_admission_policy(admission, [] {
          return true;
        }).max_unauthenticated_per_address == 2);  // at least 2
  admission.max_per_address = 0;                   // no limit
  CHECK(mux::upload_admission_policy(admission, [] {
          return true;
        }).max_unauthenticated_per_address == 0);
}
