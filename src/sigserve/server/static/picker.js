// An image input: drop a file, paste one, pick one, or give a URL. A file becomes a data URI (sent to
// the server inline, previewed without any request); a URL is sent as is (the server fetches it).
// Each image is {name, type, src}: src is what the <img> shows and what the request carries.

const pickers = new Set();

export function picker(root, { onChange = () => {} } = {}) {
  const multiple = root.hasAttribute("data-multiple");
  const bare = root.hasAttribute("data-bare"); // the panel draws the image itself
  const optional = root.hasAttribute("data-optional");
  root.innerHTML = `
    <button type="button" class="drop">${multiple ? "Drop, paste or pick images" : "Drop, paste or pick an image"}
      ${optional ? "(optional)" : ""}</button>
    <input type="file" accept="image/*" hidden ${multiple ? "multiple" : ""}>
    <div class="url"><input type="url" placeholder="or an image URL" aria-label="Image URL">
      <button type="button">Use URL</button></div>
    <ul class="chosen"></ul>`;
  const [drop, file, url, useUrl, list] = ["button.drop", "input[type=file]", "input[type=url]", ".url button", ".chosen"]
    .map((s) => root.querySelector(s));
  const state = { images: [], root };

  function set(images) {
    state.images = multiple ? [...state.images, ...images] : images.slice(0, 1);
    render();
    onChange(state.images);
  }
  function render() {
    list.replaceChildren(...state.images.map((image, i) => {
      const li = document.createElement("li");
      if (!bare) {
        const img = Object.assign(document.createElement("img"), { src: image.src, alt: image.name });
        img.referrerPolicy = "no-referrer";
        li.append(img);
      }
      const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "×" });
      remove.setAttribute("aria-label", `Remove ${image.name}`);
      remove.onclick = () => { state.images.splice(i, 1); render(); onChange(state.images); };
      li.append(Object.assign(document.createElement("span"), { textContent: image.name }), remove);
      return li;
    }));
  }
  async function fromFiles(files) {
    const images = [...files].filter((f) => f.type.startsWith("image/"));
    if (images.length) set(await Promise.all(images.map(readFile)));
  }

  drop.onclick = () => file.click();
  file.onchange = () => fromFiles(file.files).then(() => { file.value = ""; });
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); fromFiles(e.dataTransfer.files); };
  const takeUrl = () => {
    if (!url.value.trim()) return;
    const src = url.value.trim();
    set([{ name: src.split("/").pop() || src, type: "", src }]);
    url.value = "";
  };
  useUrl.onclick = takeUrl;
  url.onkeydown = (e) => { if (e.key === "Enter") { e.preventDefault(); takeUrl(); } };
  state.paste = fromFiles;
  pickers.add(state);
  return state;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ name: file.name || "pasted image", type: file.type, src: reader.result });
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// Ctrl+V anywhere: the image goes to the first picker of the panel on show.
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files ?? [])];
  if (!files.length) return;
  const visible = [...pickers].find((p) => p.root.offsetParent !== null); // in the panel on show
  if (visible) { e.preventDefault(); visible.paste(files); }
});
