import Foundation
import LockCrypto
import LockServerS3
import LockTesting
import Testing

/// AWS Signature Version 4, checked against AWS's published vectors in
/// Tests/Vectors/sigv4.json (the SigV4 test suite and the S3 documentation
/// examples). A failure is a signer bug: the vectors are AWS's, never edit them.
@Suite struct SigV4VectorTests {
    struct VectorFile: Decodable {
        let about: String
        let suites: [Suite]
    }

    struct Suite: Decodable {
        let name: String
        let accessKeyId: String
        let secretAccessKey: String
        let region: String
        let service: String
        let s3: Bool
        let cases: [Case]
    }

    struct Case: Decodable, Sendable, CustomTestStringConvertible {
        let name: String
        let method: String
        let path: String
        let query: [[String]]
        let headers: [[String]]
        let body: String
        let creq: String?
        let sts: String
        let authz: String
        var testDescription: String { name }
    }

    static let file: VectorFile = {
        let url = GoldenVectors.directory.appendingPathComponent("sigv4.json")
        guard let data = try? Data(contentsOf: url), let file = try? JSONDecoder().decode(VectorFile.self, from: data) else {
            fatalError("Tests/Vectors/sigv4.json is missing or malformed")
        }
        return file
    }()

    static func suite(_ name: String) -> Suite { file.suites.first { $0.name == name }! }
    static var suiteCases: [Case] { suite("aws-sig-v4-test-suite").cases }
    static var s3Cases: [Case] { suite("s3-documentation-examples").cases }

    /// Signs one case the way the store signs: every header given, the body's SHA-256.
    static func sign(_ c: Case, in suite: Suite) throws -> SigV4Signer.Signature {
        let signer = SigV4Signer(credentials: S3Credentials(accessKeyID: suite.accessKeyId, secretAccessKey: suite.secretAccessKey),
                                 region: suite.region, service: suite.service)
        let headers = c.headers.map { ($0[0], $0[1]) }
        let amzDate = try #require(headers.first { $0.0.lowercased() == "x-amz-date" }?.1)
        let payload = Hex.encode(SHA256.hash(Array(c.body.utf8)))
        if suite.s3 {
            // S3 signs the body through x-amz-content-sha256, which must be the body's hash.
            #expect(headers.first { $0.0.lowercased() == "x-amz-content-sha256" }?.1 == payload)
        }
        let request = SigV4Signer.Request(method: c.method, path: c.path, query: c.query.map { ($0[0], $0[1]) },
                                          headers: headers, payloadSHA256: payload)
        return signer.sign(request, amzDate: amzDate)
    }

    @Test func theFileHoldsBothSources() {
        #expect(Self.suiteCases.count >= 20)
        #expect(Self.s3Cases.map(\.name) == ["GET Object", "PUT Object", "GET Bucket lifecycle", "Get Bucket (List Objects)"])
    }

    @Test(arguments: suiteCases)
    func awsTestSuite(_ c: Case) throws {
        let signature = try Self.sign(c, in: Self.suite("aws-sig-v4-test-suite"))
        if let creq = c.creq { #expect(signature.canonicalRequest == creq) }
        #expect(signature.stringToSign == c.sts)
        #expect(signature.authorization == c.authz)
    }

    @Test(arguments: s3Cases)
    func s3DocumentationExamples(_ c: Case) throws {
        let signature = try Self.sign(c, in: Self.suite("s3-documentation-examples"))
        #expect(signature.canonicalRequest == c.creq)
        #expect(signature.stringToSign == c.sts)
        // The S3 documentation writes "…,SignedHeaders=…,Signature=…" without spaces.
        #expect(signature.authorization.replacingOccurrences(of: ", ", with: ",") == c.authz)
    }

    @Test func encodingAndDates() {
        #expect(SigV4Signer.uriEncode("a b+c/d~e=é", keepSlash: false) == "a%20b%2Bc%2Fd~e%3D%C3%A9")
        #expect(SigV4Signer.encodePath("/bucket/test$file.text") == "/bucket/test%24file.text")
        #expect(SigV4Signer.amzDate(Date(timeIntervalSince1970: 1_369_353_600)) == "20130524T000000Z")
        #expect(SigV4Signer.amzDate(Date(timeIntervalSince1970: 1_440_938_160.9)) == "20150830T123600Z")
        #expect(Hex.encode(SHA256.hash([UInt8]())) == SigV4Signer.emptyPayloadSHA256)
    }

    /// The body is bound: the same request with another payload hash has another signature.
    @Test func theSignatureCoversTheBody() throws {
        let suite = Self.suite("s3-documentation-examples")
        let put = try #require(Self.s3Cases.first { $0.name == "PUT Object" })
        let signer = SigV4Signer(credentials: S3Credentials(accessKeyID: suite.accessKeyId, secretAccessKey: suite.secretAccessKey),
                                 region: suite.region)
        var request = SigV4Signer.Request(method: put.method, path: put.path, headers: put.headers.map { ($0[0], $0[1]) },
                                          payloadSHA256: Hex.encode(SHA256.hash(Array(put.body.utf8))))
        let original = signer.sign(request, amzDate: "20130524T000000Z")
        request.payloadSHA256 = Hex.encode(SHA256.hash(Array("Welcome to Amazon S3".utf8)))  // one byte short
        #expect(signer.sign(request, amzDate: "20130524T000000Z").authorization != original.authorization)
    }
}
