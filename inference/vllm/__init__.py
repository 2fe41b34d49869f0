"""The vLLM tier: launch profiles as code, the bundled models, and running vLLM's OpenAI server.

- `profiles`: engine settings per hardware (cpu, gpu) and workload (interactive, batch);
- `launch`: a profile → the server's argv and environment (`build_launch`, pure; `plan_launch`
  detects the machine and the model's quantisation);
- `models`: where the bundled chat and embedding models live, and their one-off preparation;
- `server`: start one server, report its loading, know when it answers, stop it.

No Django import here: `manage.py vllm` (platform/costline/management/commands/vllm.py) is the edge.
"""
