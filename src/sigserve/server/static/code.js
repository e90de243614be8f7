// "Code": the request a panel just made, as curl and as Python (the openai client, whose documented
// client.post reaches routes beyond embeddings), runnable as shown. The API key is never written out:
// both read $SIGSERVE_API_KEY. Pictures from files are read from those files by name.

const INDENT = "    ";

// Python source for a JSON value; images from files become data_uri("name", "type") calls.
function python(value, files, depth = 0) {
  const pad = INDENT.repeat(depth + 1);
  const end = INDENT.repeat(depth);
  if (typeof value === "string" && files.has(value)) {
    const { name, type } = files.get(value);
    return `data_uri(${JSON.stringify(name)}, ${JSON.stringify(type || "image/png")})`;
  }
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => pad + python(v, files, depth + 1)).join(",\n")},\n${end}]`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${python(v, files, depth + 1)}`).join(",\n")},\n${end}}`;
  }
  return JSON.stringify(value); // numbers, and strings: a JSON string literal is a Python one
}

function pythonSnippet(path, body, files) {
  const usesFiles = files.size > 0;
  return [
    "import os",
    ...(usesFiles ? ["import base64"] : []),
    "",
    "import httpx",
    "from openai import OpenAI",
    "",
    ...(usesFiles ? [
      "",
      "def data_uri(path, mime):",
      `${INDENT}with open(path, "rb") as f:`,
      `${INDENT}${INDENT}return f"data:{mime};base64," + base64.b64encode(f.read()).decode()`,
      "",
      "",
    ] : []),
    `client = OpenAI(base_url="${location.origin}/v1", api_key=os.environ.get("SIGSERVE_API_KEY", "none"))`,
    `body = ${python(body, files)}`,
    `response = client.post("${path.replace(/^\/v1/, "")}", body=body, cast_to=httpx.Response)`,
    "print(response.json())",
  ].join("\n");
}

// Inside an unquoted heredoc the shell expands $, ` and \: escape them, then let the image variables in.
function curlSnippet(path, body, files, keyed) {
  const names = new Map([...files.keys()].map((src, i) => [src, `IMAGE_${i}`]));
  let json = JSON.stringify(body, null, 2).replace(/[\\$`]/g, (c) => `\\${c}`);
  for (const [src, variable] of names) json = json.split(JSON.stringify(src)).join(`"$${variable}"`);
  const reads = [...files.entries()].map(([src, { name, type }]) =>
    `${names.get(src)}="data:${type || "image/png"};base64,$(base64 < ${shellQuote(name)} | tr -d '\\n')"`);
  return [
    ...reads,
    `curl -s ${location.origin}${path} \\`,
    ...(keyed ? [`  -H "Authorization: Bearer $SIGSERVE_API_KEY" \\`] : []),
    `  -H "Content-Type: application/json" -d @- <<EOF`,
    json,
    "EOF",
  ].join("\n");
}

function shellQuote(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

// Fill a panel's <details class="code"> with the request just made. images: the pictures it carried.
export function showCode(panel, path, body, images = [], keyed = false) {
  const files = new Map(images.filter((i) => i.src.startsWith("data:")).map((i) => [i.src, i]));
  const details = panel.querySelector("details.code");
  const blocks = [["curl", curlSnippet(path, body, files, keyed)], ["Python", pythonSnippet(path, body, files)]];
  details.querySelector(".snippets").replaceChildren(...blocks.map(([title, text]) => {
    const figure = document.createElement("figure");
    const pre = Object.assign(document.createElement("pre"), { textContent: text });
    pre.dataset.language = title.toLowerCase();
    pre.tabIndex = 0;
    figure.append(Object.assign(document.createElement("figcaption"), { textContent: title }), pre);
    return figure;
  }));
  details.hidden = false;
}
