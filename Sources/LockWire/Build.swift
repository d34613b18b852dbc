/// Facts about this build of lockfs, shared by both executables.
public enum Build {
    /// The lockfs release this code belongs to (semantic versioning).
    public static let version = "0.1.0"
}
