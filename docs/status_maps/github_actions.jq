# GitHub's workflow_run webhook: a finished run decides (success up, failure or timeout down,
# anything else degraded); a run that is only requested or in progress changes nothing.
if .action != "completed" then {ignore: true}
else
  .workflow_run as $run
  | {
      status: (if $run.conclusion == "success" then "up"
               elif ($run.conclusion == "failure" or $run.conclusion == "timed_out") then "down"
               else "degraded" end),
      message: "\($run.name) #\($run.run_number) on \($run.head_branch): \($run.conclusion)"
    }
end
