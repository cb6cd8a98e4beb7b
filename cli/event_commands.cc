#include "cli/event_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/proto_json.h"
#include "common/units.h"

namespace gswarm::cli {
namespace {

// "14:03:07.412  #118   instance  state           instance inst-1 of tiny on node-a: ..."
std::string EventLine(const v1::Event& event) {
  const absl::Time when = common::FromTimestamp(event.time());
  return absl::StrFormat("%s  #%-5d %-8s  %-14s  %s",
                         absl::FormatTime("%H:%M:%E3S", when, absl::LocalTimeZone()), event.seq(),
                         event.kind(), event.action(), event.message());
}

}  // namespace

EventCommands::EventCommands(CLI::App& app) {
  events_ = app.add_subcommand(
      "events",
      "Show what happened in the cluster: nodes going on- and offline, jobs, copies appearing "
      "and going, instance state changes, router loads, evictions and switches");
  events_->add_flag("-f,--follow", follow_, "Keep printing events as they happen (Ctrl-C ends)");
  events_->add_option("--kind", kinds_, "Only these kinds: node, job, replica, instance, router")
      ->delimiter(',');
  events_->add_option("--model", model_, "Only events about this model");
  events_->add_option("--node", node_, "Only events about this node");
  events_->add_option("--since", since_,
                      "Start after this sequence number (the # column) instead of the newest");
  events_->add_option("--last", last_, "How many of the newest events to show first")
      ->capture_default_str();
  events_->footer(
      "Examples:\n"
      "  gswarm events                      the last 20 events\n"
      "  gswarm events -f --kind instance   instance state changes as they happen\n"
      "  gswarm events -f --json            one JSON object per line, for scripts\n"
      "The host keeps its last 4096 events; REST: curl -N localhost:8100/events?follow=true");
}

bool EventCommands::Parsed() const { return events_->parsed(); }

int EventCommands::Run(ApiClient& api, bool json) {
  if (last_ < 0) return PrintError("--last must not be negative");
  v1::WatchEventsRequest request;
  for (const std::string& kind : kinds_) request.add_kinds(kind);
  request.set_model_name(model_);
  request.set_node(node_);
  request.set_since_seq(since_);
  request.set_last(static_cast<uint32_t>(last_));
  request.set_no_follow(!follow_);
  grpc::ClientContext context;
  api.Prepare(&context, follow_ ? std::chrono::seconds(0) : std::chrono::seconds(30));
  auto reader = api.stub().WatchEvents(&context, request);
  int shown = 0;
  for (v1::Event event; reader->Read(&event); ++shown) {
    if (json) {
      absl::StatusOr<std::string> line = common::ToJson(event);
      std::cout << (line.ok() ? *line : "{}") << "\n" << std::flush;
    } else {
      std::cout << EventLine(event) << "\n" << std::flush;
    }
  }
  if (absl::Status s = api.Explain(reader->Finish()); !s.ok()) return PrintError(s.message());
  if (shown == 0 && !json && !follow_) std::cout << "No events yet.\n";
  return 0;
}

}  // namespace gswarm::cli
