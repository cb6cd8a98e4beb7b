// The router on a real httplib server in front of real engine processes
// (tests/support/fake_engine.py): placement, fewest-in-flight routing, SSE pass-through, client
// disconnects, hot swap under load, the queue, and single-flight loads.

#include "tests/unit/router_fixture.h"

namespace gswarm::host {
namespace {

TEST_F(RouterTest, ConcurrentStreamsSpreadOverInstancesByFewestInFlight) {
  AddStandardBackends();
  StartRouter();
  std::vector<std::thread> clients;
  std::atomic<int> ok = 0;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      StreamReply reply = Stream(Chat("m", 10));  // 0.5 s each
      if (reply.status == 200 && !reply.events.empty() && reply.events.back() == "[DONE]") ++ok;
    });
  }
  // While they run, the router counts them per instance.
  EXPECT_TRUE(
      testing::WaitFor([&] { return router_->InFlight("a") == 2 && router_->InFlight("b") == 2; },
                       absl::Seconds(5)));
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(a_->Streams(), 2);
  EXPECT_EQ(b_->Streams(), 2);
  EXPECT_EQ(router_->InFlight("a"), 0);
  EXPECT_EQ(router_->InFlight("b"), 0);
  EXPECT_GT(router_->LastUsed("a"), absl::Now() - absl::Seconds(10));
  EXPECT_EQ(router_->LastUsed("never"), absl::InfinitePast());
}

TEST_F(RouterTest, StreamPassesEveryChunkInOrderAsItArrives) {
  placement_.AddReady({"a", "m", a_->url()});
  StartRouter();
  StreamReply reply = Stream(Chat("m", 8));  // 8 tokens, 50 ms apart
  ASSERT_EQ(reply.status, 200) << reply.body;
  // A role delta, 8 token deltas, the finish chunk, [DONE].
  ASSERT_EQ(reply.events.size(), 11u) << reply.body;
  EXPECT_EQ(reply.events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < reply.events.size(); ++i) {
    json chunk = json::parse(reply.events[i], nullptr, false);
    ASSERT_TRUE(chunk.is_object()) << reply.events[i];
    text += chunk["choices"][0]["delta"].value("content", "");
  }
  // The same text as the engine answers directly.
  httplib::Client direct(a_->url());
  httplib::Result whole =
      direct.Post("/v1/chat/completions", Chat("m", 8).dump(), "application/json");
  ASSERT_TRUE(whole);
  EXPECT_EQ(text, json::parse(whole->body)["choices"][0]["message"]["content"]);
  // Unbuffered: the first chunk came long before the last (the tokens span 400 ms).
  ASSERT_GE(reply.arrivals.size(), 9u);
  EXPECT_GE(reply.arrivals.back() - reply.arrivals.front(), absl::Milliseconds(250));
}

TEST_F(RouterTest, ClientDisconnectCancelsUpstream) {
  placement_.AddReady({"a", "m", a_->url()});
  StartRouter();
  StreamReply reply = Stream(Chat("m", 400), [](size_t chunks) { return chunks < 3; });  // 20 s
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(a_->Streams(), 1);
  // The engine stops generating soon after, and the lease ends.
  EXPECT_TRUE(testing::WaitFor([&] { return a_->InFlight() == 0; }, absl::Seconds(5)))
      << a_->Stats().dump();
  EXPECT_TRUE(testing::WaitFor([&] { return router_->InFlight("a") == 0; }, absl::Seconds(5)));
  EXPECT_EQ(a_->Stats().value("disconnects", 0), 1);
}

TEST_F(RouterTest, UnknownModelIs404InOpenAiShape) {
  AddStandardBackends();
  StartRouter();
  Reply reply = Post("/v1/chat/completions", Chat("nope", 1));
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(reply.body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(reply.body["error"]["code"], "model_not_found");
  EXPECT_TRUE(absl::StrContains(reply.body["error"]["message"].get<std::string>(),
                                "model \"nope\" is not registered"))
      << reply.body;
  // No model named and none active: 400.
  reply = Post("/v1/completions", {{"prompt", "hi"}});
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(reply.body["error"]["type"], "invalid_request_error");
  // Not JSON: 400.
  httplib::Client client("127.0.0.1", port_);
  httplib::Result bad = client.Post("/v1/completions", "{", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

TEST_F(RouterTest, SwitchSendsDefaultToTheNewModelAtOnce) {
  AddStandardBackends();
  StartRouter();
  Reply switched = Post("/v1/models/switch", {{"model", "m"}});
  ASSERT_EQ(switched.status, 200) << switched.body;
  EXPECT_EQ(switched.body["success"], true);
  EXPECT_EQ(switched.body["active_model"], "m");
  EXPECT_TRUE(switched.body["switch_time_us"].is_number());
  EXPECT_TRUE(switched.body["previous_model"].is_null());
  Reply reply = Post("/v1/chat/completions", Chat("default", 1));
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.body["model"], "m");

  switched = Post("/v1/models/switch", {{"model", "m2"}});
  ASSERT_EQ(switched.status, 200);
  EXPECT_EQ(switched.body["previous_model"], "m");
  EXPECT_EQ(router_->active_model(), "m2");
  reply = Post("/v1/chat/completions", Chat("default", 1));
  EXPECT_EQ(reply.body["model"], "m2");
  reply = Post("/v1/chat/completions", Chat("", 1));  // no model: the active one
  EXPECT_EQ(reply.body["model"], "m2");
  EXPECT_EQ(c_->Stats()["by_path"].value("/v1/chat/completions", 0), 2);

  Reply models = Get("/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.body["object"], "list");
  int active = 0;
  for (const json& entry : models.body["data"]) {
    EXPECT_EQ(entry["is_active"], entry["id"] == "m2") << entry;
    active += entry["is_active"].get<bool>();
  }
  EXPECT_EQ(active, 1);

  Reply unknown = Post("/v1/models/switch", {{"model", "nope"}});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.body["error"]["code"], "model_not_found");
  EXPECT_EQ(router_->active_model(), "m2");
}

TEST_F(RouterTest, SwitchUnderSteadyLoadFailsNoRequest) {
  AddStandardBackends();
  StartRouter();
  ASSERT_TRUE(router_->Switch("m").ok());
  std::atomic<bool> stop = false;
  std::atomic<int> failed = 0;
  std::atomic<int> on_m = 0;
  std::atomic<int> on_m2 = 0;
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      while (!stop.load()) {
        std::string model;
        if (i % 2 == 0) {
          Reply reply = Post("/v1/chat/completions", Chat("default", 2));
          if (reply.status != 200) {
            ++failed;
            continue;
          }
          model = reply.body.value("model", "");
        } else {
          StreamReply reply = Stream(Chat("default", 2));
          if (reply.status != 200 || reply.events.empty() || reply.events.back() != "[DONE]") {
            ++failed;
            continue;
          }
          model = json::parse(reply.events.front()).value("model", "");
        }
        ++(model == "m" ? on_m : on_m2);
      }
    });
  }
  ASSERT_TRUE(testing::WaitFor([&] { return on_m.load() >= 16; }, absl::Seconds(10)));
  absl::StatusOr<json> switched = router_->Switch("m2");
  ASSERT_TRUE(switched.ok());
  const int m_at_switch = on_m.load();
  ASSERT_TRUE(testing::WaitFor([&] { return on_m2.load() >= 16; }, absl::Seconds(10)));
  stop = true;
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(failed.load(), 0);
  // Only requests already in flight at the switch (at most one per client) finished on "m".
  EXPECT_LE(on_m.load() - m_at_switch, 8);
  EXPECT_LT(switched->value("switch_time_us", 1e9), 1000.0);
}

TEST_F(RouterTest, FullQueueAnswers429WithRetryAfter) {
  placement_.AddReady({"a", "m", a_->url()});
  StartRouter({.max_concurrent_per_instance = 1, .max_queue = 1});
  std::thread holder([&] { Stream(Chat("m", 30)); });  // holds "a" for 1.5 s
  ASSERT_TRUE(testing::WaitFor([&] { return router_->InFlight("a") == 1; }, absl::Seconds(5)));
  std::vector<Reply> replies(3);
  std::vector<std::thread> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&, i] { replies[i] = Post("/v1/chat/completions", Chat("m", 1)); });
  }
  for (std::thread& client : clients) client.join();
  holder.join();
  int ok = 0;
  int rejected = 0;
  for (const Reply& reply : replies) {
    if (reply.status == 200) ++ok;
    if (reply.status == 429) {
      ++rejected;
      EXPECT_EQ(reply.retry_after, "1");
      EXPECT_EQ(reply.body["error"]["code"], "rate_limit_exceeded");
    }
  }
  EXPECT_EQ(ok, 1);  // the one that waited in the queue
  EXPECT_EQ(rejected, 2);
  EXPECT_EQ(a_->Stats().value("max_in_flight", 0), 1);
}

TEST_F(RouterTest, ConcurrentRequestsForAnUnloadedModelShareOneLoad) {
  placement_.AddModel("lazy");
  // The engine starts on a thread that outlives the load: a child started with PDEATHSIG dies
  // with the thread that forked it, and the router's load thread ends after the load.
  std::promise<void> start;
  std::promise<std::string> started;
  std::promise<void> finish;
  std::thread launcher([&] {
    start.get_future().wait();
    std::unique_ptr<Engine> engine = Engine::Start(dir_ + "/tiny", dir_, "lazy", 0);
    started.set_value(engine == nullptr ? "" : engine->url());
    finish.get_future().wait();
  });
  absl::Cleanup stop_launcher = [&] {
    TearDown();  // the router before its engine
    finish.set_value();
    launcher.join();
  };
  std::future<std::string> url = started.get_future();
  placement_.SetLoad([&](const std::string& model, absl::Time) -> absl::StatusOr<Backend> {
    if (placement_.load_calls() > 1) return absl::InternalError("a second load");
    start.set_value();
    std::string endpoint = url.get();
    if (endpoint.empty()) return absl::InternalError("engine did not start");
    return Backend{"lazy-1", model, endpoint};
  });
  StartRouter();
  std::vector<Reply> replies(8);
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      replies[i] =
          Post("/v1/completions", {{"model", "lazy"}, {"prompt", "x y"}, {"max_tokens", 2}});
    });
  }
  for (std::thread& client : clients) client.join();
  for (const Reply& reply : replies) EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(placement_.load_calls(), 1);
}

TEST_F(RouterTest, LoadPastItsDeadlineAnswers503) {
  placement_.AddModel("slow");
  placement_.SetLoad([](const std::string&, absl::Time deadline) -> absl::StatusOr<Backend> {
    absl::SleepFor(deadline - absl::Now());
    return absl::DeadlineExceededError("the instance was not ready in time");
  });
  StartRouter({.load_timeout = absl::Milliseconds(300)});
  Reply reply = Post("/v1/chat/completions", Chat("slow", 1));
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(reply.retry_after, "1");
  EXPECT_TRUE(absl::StrContains(reply.body["error"]["message"].get<std::string>(),
                                "loading model \"slow\" failed"))
      << reply.body;
}

TEST_F(RouterTest, WaitForALoadIsBoundedByTheQueueTimeout) {
  placement_.AddModel("slow");
  placement_.SetLoad([](const std::string&, absl::Time deadline) -> absl::StatusOr<Backend> {
    absl::SleepFor(deadline - absl::Now());
    return absl::DeadlineExceededError("the instance was not ready in time");
  });
  StartRouter({.queue_timeout = absl::Milliseconds(200), .load_timeout = absl::Seconds(1)});
  const absl::Time start = absl::Now();
  Reply reply = Post("/v1/chat/completions", Chat("slow", 1));
  EXPECT_EQ(reply.status, 503);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));
  EXPECT_TRUE(absl::StrContains(reply.body["error"]["message"].get<std::string>(), "still loading"))
      << reply.body;
}

TEST_F(RouterTest, KeepAliveGoesToThePlacementNotToTheEngine) {
  placement_.AddReady({"a", "m", a_->url()});
  StartRouter();
  const std::vector<std::pair<json, absl::Duration>> cases = {
      {300, absl::Seconds(300)},      {"5m", absl::Minutes(5)},
      {"1h30m", absl::Minutes(90)},   {"250ms", absl::Milliseconds(250)},
      {"42", absl::Seconds(42)},      {0, absl::ZeroDuration()},
      {-1, absl::InfiniteDuration()}, {"-1m", absl::InfiniteDuration()},
  };
  for (const auto& [value, expected] : cases) {
    json body = Chat("m", 1);
    body["keep_alive"] = value;
    Reply reply = Post("/v1/chat/completions", body);
    ASSERT_EQ(reply.status, 200) << value << ": " << reply.body;
    EXPECT_EQ(placement_.keep_alive("a"), expected) << value;
    const json keys = a_->Stats()["last_request_keys"];
    EXPECT_EQ(std::count(keys.begin(), keys.end(), "keep_alive"), 0) << keys;
    EXPECT_EQ(std::count(keys.begin(), keys.end(), "max_tokens"), 1) << keys;
  }
  // None, or null: the default again, as in Ollama.
  json with_null = Chat("m", 1);
  with_null["keep_alive"] = nullptr;
  for (const json& body : {with_null, Chat("m", 1)}) {
    ASSERT_TRUE(placement_.keep_alive("a").has_value());
    Reply reply = Post("/v1/chat/completions", body);
    ASSERT_EQ(reply.status, 200) << reply.body;
    EXPECT_EQ(placement_.keep_alive("a"), std::nullopt) << body;
    EXPECT_EQ(a_->Stats()["last_request_keys"].dump().find("keep_alive"), std::string::npos);
    placement_.KeepAlive("a", absl::Seconds(1));
  }
  for (const json& bad : {json("soon"), json(true), json::object(), json("1x")}) {
    json body = Chat("m", 1);
    body["keep_alive"] = bad;
    Reply reply = Post("/v1/chat/completions", body);
    EXPECT_EQ(reply.status, 400) << bad;
    EXPECT_TRUE(absl::StrContains(reply.body["error"]["message"].get<std::string>(), "keep_alive"))
        << reply.body;
  }
}

TEST_F(RouterTest, RetiringIsRefusedUnderALeaseAndFinalOnceDone) {
  placement_.AddReady({"a", "m", a_->url()});
  placement_.AddReady({"b", "m", b_->url()});
  StartRouter();
  // A stream on each instance: neither can be retired under it.
  std::thread first([&] { Stream(Chat("m", 20)); });  // 1 s
  std::thread second([&] { Stream(Chat("m", 20)); });
  ASSERT_TRUE(
      testing::WaitFor([&] { return router_->InFlight("a") == 1 && router_->InFlight("b") == 1; },
                       absl::Seconds(5)));
  auto drain = [&](const char* id) { return [&, id] { return placement_.Drain(id); }; };
  EXPECT_FALSE(router_->TryRetire("a", absl::Now(), drain("a")));
  EXPECT_FALSE(router_->TryRetire("b", absl::Now(), drain("b")));
  first.join();
  second.join();
  // Used just now: not idle since a minute ago, but idle since now.
  EXPECT_FALSE(router_->TryRetire("a", absl::Now() - absl::Minutes(1), drain("a")));
  ASSERT_TRUE(router_->TryRetire("a", absl::Now(), drain("a")));
  // Retired: every request goes to "b" from now on, even with "a" still listed ready.
  a_->ResetStats();
  b_->ResetStats();
  for (int i = 0; i < 4; ++i) {
    Reply reply = Post("/v1/chat/completions", Chat("m", 1));
    EXPECT_EQ(reply.status, 200) << reply.body;
  }
  EXPECT_EQ(a_->Stats().value("requests", -1), 0);
  EXPECT_EQ(b_->Stats().value("requests", -1), 4);
  // Forgotten (the instance is gone): its id carries nothing over.
  router_->Forget("a");
  EXPECT_EQ(router_->LastUsed("a"), absl::InfinitePast());
}

TEST_F(RouterTest, AllInstancesRetiredMeansALoad) {
  placement_.AddReady({"a", "m", a_->url()});
  placement_.SetLoad([&](const std::string& model, absl::Time) -> absl::StatusOr<Backend> {
    return Backend{"b", model, b_->url()};
  });
  StartRouter();
  ASSERT_TRUE(router_->TryRetire("a", absl::Now(), [&] { return placement_.Drain("a"); }));
  Reply reply = Post("/v1/chat/completions", Chat("m", 1));
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(placement_.load_calls(), 1);
  EXPECT_EQ(b_->Stats().value("requests", -1), 1);
}

TEST_F(RouterTest, UnreachableInstanceIs502) {
  // A port nobody listens on.
  int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(sock);
  placement_.AddReady({"gone", "m", absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port))});
  StartRouter({.connect_timeout = absl::Seconds(2)});
  Reply reply = Post("/v1/chat/completions", Chat("m", 1));
  EXPECT_EQ(reply.status, 502);
  EXPECT_TRUE(absl::StrContains(reply.body["error"]["message"].get<std::string>(),
                                "instance gone of model \"m\""))
      << reply.body;
  StreamReply stream = Stream(Chat("m", 1));
  EXPECT_EQ(stream.status, 502) << stream.body;
  EXPECT_EQ(router_->InFlight("gone"), 0);
}

}  // namespace
}  // namespace gswarm::host
