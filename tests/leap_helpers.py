"""What the LeaP loop tests share: a PathStore whose paths say which they are, for scripted generators."""

from crosspath.infer.paths import PathStore


def tagged_store(gen, paths: int | None = None, **kw) -> PathStore:
    """A PathStore over `gen` (kw: PathStore options) whose n-th added path carries "PATH=n" after its
    prompt; with `paths`, n counts modulo `paths`: the path's index within its question."""
    store, add, count = PathStore(gen, **kw), PathStore.add, [0]

    def tagged(prompt):
        n = count[0] if paths is None else count[0] % paths
        count[0] += 1
        return add(store, prompt + f"PATH={n}")

    store.add = tagged
    return store
