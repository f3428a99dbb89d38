// SPDX-License-Identifier: Apache-2.0
// Flamenco job type: impasto batch runs, split into chunks of items.
// Put this file in the Flamenco Manager's `scripts/` folder and restart the Manager; jobs of
// type "impasto-batch" then run `impasto batch SPEC --items A-B` on the Workers, one chunk a task.

const JOB_TYPE = {
  label: "impasto batch",
  description: "impasto paint / texture / stylize over many images, in chunks of items",
  settings: [
    { key: "spec", type: "string", subtype: "file_path", required: true,
      description: "The impasto batch spec (TOML or JSON), on storage all Workers share" },
    { key: "items", type: "string", required: true,
      description: "Task indices to run, 0-(N-1) for all N (impasto batch SPEC --count prints N)" },
    { key: "chunk_size", type: "int32", default: 10, description: "Items per Flamenco task" },
    { key: "workers", type: "int32", default: 1, description: "Worker processes inside each task" },
    { key: "impasto", type: "string", default: "impasto", description: "The impasto command on the Workers" },
  ],
};

function compileJob(job) {
  const settings = job.settings;
  const match = /^(\d+)(?:-(\d+))?$/.exec(settings.items.trim());
  if (!match) {
    throw `items must look like 0-239, not "${settings.items}"`;
  }
  const first = parseInt(match[1]);
  const last = match[2] === undefined ? first : parseInt(match[2]);
  const chunk = Math.max(1, settings.chunk_size);
  for (let start = first; start <= last; start += chunk) {
    const end = Math.min(start + chunk - 1, last);
    const task = author.Task(`impasto items ${start}-${end}`, "misc");
    task.addCommand(author.Command("exec", {
      exe: settings.impasto,
      args: ["batch", settings.spec, "--items", `${start}-${end}`, "--workers", `${settings.workers}`],
    }));
    job.addTask(task);
  }
}
