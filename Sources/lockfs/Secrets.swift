import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reading passwords and recovery keys: from a file for scripts, else from
/// the terminal (/dev/tty) with echo off. Never from an argument (visible in
/// `ps`) or the environment.
enum Secrets {
    /// The first line of `path`, without its line ending.
    /// - Throws: `CLIError.usage` if the file cannot be read or the line is empty.
    static func firstLine(ofFile path: String, what: String) throws -> String {
        guard var data = FileManager.default.contents(atPath: path) else {
            throw CLIError.usage("cannot read the \(what) file \(path)")
        }
        defer { data.resetBytes(in: 0..<data.count) }
        let line = data.prefix { $0 != UInt8(ascii: "\n") }
        let trimmed = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
        guard let text = String(data: Data(trimmed), encoding: .utf8) else {
            throw CLIError.usage("the \(what) file \(path) is not UTF-8 text")
        }
        guard !text.isEmpty else { throw CLIError.usage("the first line of the \(what) file \(path) is empty") }
        return text
    }

    /// The whole of `path` (a recovery key may be written over several lines).
    static func contents(ofFile path: String, what: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CLIError.usage("cannot read the \(what) file \(path)")
        }
        return text
    }

    /// A password from `file`, or asked once on the terminal.
    static func password(file: String?, prompt: String) throws -> String {
        if let file { return try firstLine(ofFile: file, what: "password") }
        let text = try Terminal.readSecret(prompt: prompt)
        guard !text.isEmpty else { throw CLIError.usage("the password is empty") }
        return text
    }

    /// A new password from `file`, or asked twice on the terminal; warns if it looks weak.
    static func newPassword(file: String?, prompt: String) throws -> String {
        let password: String
        if let file {
            password = try firstLine(ofFile: file, what: "password")
        } else {
            password = try Terminal.readSecret(prompt: prompt)
            guard !password.isEmpty else { throw CLIError.usage("the password is empty") }
            guard try Terminal.readSecret(prompt: "Repeat it: ") == password else { throw CLIError.passwordsDiffer }
        }
        if let weakness = weakness(of: password) {
            printWarning("\(weakness). Anyone who gets the server's copy of your keyring can try passwords offline; a long passphrase of several words is much safer.")
        }
        return password
    }

    /// Why `password` looks weak, or nil: shorter than 12 characters, or all
    /// of one class (lower case, upper case, digits, others). A warning only.
    static func weakness(of password: String) -> String? {
        if password.count < 12 { return "this password is shorter than 12 characters" }
        func kind(_ c: Character) -> Int {
            if c.isLowercase { return 0 }
            if c.isUppercase { return 1 }
            if c.isNumber { return 2 }
            return 3
        }
        if Set(password.map(kind)).count == 1 { return "this password uses only one kind of character" }
        return nil
    }
}

/// The controlling terminal, for prompts without echo.
enum Terminal {
    /// The settings to restore if the user presses Ctrl-C while echo is off.
    nonisolated(unsafe) static var saved: (fd: Int32, attributes: termios)?

    /// Prints `prompt` on /dev/tty and reads one line with echo off.
    /// - Throws: `CLIError.noTerminal` without a controlling terminal.
    static func readSecret(prompt: String) throws -> String {
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw CLIError.noTerminal }
        defer { close(fd) }
        var original = termios()
        guard tcgetattr(fd, &original) == 0 else { throw CLIError.noTerminal }
        var silent = original
        silent.c_lflag &= ~tcflag_t(ECHO | ECHONL)
        silent.c_lflag |= tcflag_t(ICANON)
        saved = (fd, original)
        signal(SIGINT) { _ in
            if var s = Terminal.saved { tcsetattr(s.fd, TCSAFLUSH, &s.attributes); _ = Glibc.write(s.fd, "\n", 1) }
            _exit(130)
        }
        defer {
            tcsetattr(fd, TCSAFLUSH, &original)
            saved = nil
            signal(SIGINT, SIG_DFL)
        }
        write(fd, prompt)
        guard tcsetattr(fd, TCSAFLUSH, &silent) == 0 else { throw CLIError.noTerminal }
        var bytes = [UInt8]()
        defer { bytes.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || byte == UInt8(ascii: "\n") { break }
            bytes.append(byte)
        }
        byte = 0
        write(fd, "\n")
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { p in _ = Glibc.write(fd, p.baseAddress, p.count) }
    }
}
