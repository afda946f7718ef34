//! The typed outputs of the pipeline's executors, and the deterministic
//! content they are filled with.
//!
//! Each output is a record with several fields and a text; the text is
//! sized so that the output's JSON is exactly `output_kb` KiB. The content
//! is generated from the document id and the step, so the same job gives
//! the same outputs.

use serde::{Deserialize, Serialize};

use super::DocumentJob;

/// Where a run is, carried by every output to the next executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The document.
    pub document_id: String,
    /// The step (superstep) that produced this output, 1 for `entry-unpack`.
    pub step: u32,
    /// Executor invocations in the run.
    pub executors: u32,
    /// The output size in KiB.
    pub output_kb: u32,
    /// Simulated work per executor, in milliseconds.
    pub work_ms: u32,
}

impl Progress {
    /// The progress of the first step of `job`.
    pub fn first(job: &DocumentJob) -> Self {
        Self {
            document_id: job.document_id.clone(),
            step: 1,
            executors: job.executors,
            output_kb: job.output_kb,
            work_ms: job.work_ms,
        }
    }

    /// The progress of the next step.
    pub fn next(&self) -> Self {
        Self {
            step: self.step + 1,
            ..self.clone()
        }
    }

    fn target_bytes(&self) -> usize {
        self.output_kb as usize * 1024
    }

    fn seed(&self, stage: &str) -> u64 {
        fnv1a(&[
            self.document_id.as_bytes(),
            stage.as_bytes(),
            &self.step.to_le_bytes(),
        ])
    }
}

/// A page of the unpacked document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRef {
    /// The page number (1 for the first).
    pub number: u32,
    /// Width in points.
    pub width_pt: u32,
    /// Height in points.
    pub height_pt: u32,
    /// A checksum of the page image.
    pub checksum: String,
}

/// The output of `entry-unpack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnpackedDocument {
    /// Where the run is.
    pub progress: Progress,
    /// The file name.
    pub file_name: String,
    /// The media type.
    pub media_type: String,
    /// The file size.
    pub byte_size: u64,
    /// The pages.
    pub pages: Vec<PageRef>,
    /// The raw text layer.
    pub text: String,
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Details.
    pub detail: String,
}

/// The output of `validate-inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedInputs {
    /// Where the run is.
    pub progress: Progress,
    /// The detected language.
    pub language: String,
    /// The number of pages.
    pub page_count: u32,
    /// The checks run on the input.
    pub checks: Vec<Check>,
    /// Notes for the later stages.
    pub notes: String,
}

/// A named threshold of the extraction profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The name.
    pub name: String,
    /// The value.
    pub value: f64,
}

/// The output of `load-configuration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// Where the run is.
    pub progress: Progress,
    /// The extraction profile.
    pub profile: String,
    /// The model the analysis uses.
    pub model: String,
    /// The fields to extract.
    pub fields: Vec<String>,
    /// Thresholds.
    pub thresholds: Vec<Threshold>,
    /// The instructions for the analysis.
    pub instructions: String,
}

/// A block of the page layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The page.
    pub page: u32,
    /// `heading`, `paragraph`, `table`, ...
    pub kind: String,
    /// Bounding box: x, y, width, height in points.
    pub bbox: [u32; 4],
    /// Detection confidence, 0 to 1.
    pub confidence: f64,
}

/// The output of `extract-layout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Where the run is.
    pub progress: Progress,
    /// Which layout pass this is (1 for the first).
    pub round: u32,
    /// The blocks found.
    pub blocks: Vec<Block>,
    /// The text in reading order.
    pub text: String,
}

/// A field extracted from the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedField {
    /// The field name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Extraction confidence, 0 to 1.
    pub confidence: f64,
    /// The page it was found on.
    pub page: u32,
}

/// The output of `analyse-document`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Where the run is.
    pub progress: Progress,
    /// Which analysis round this is (1 for the first).
    pub round: u32,
    /// The document class.
    pub classification: String,
    /// The extracted fields.
    pub fields: Vec<ExtractedField>,
    /// A summary of the document.
    pub summary: String,
}

/// The output of `validate-outputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Where the run is.
    pub progress: Progress,
    /// Whether every check passed.
    pub valid: bool,
    /// The checks run on the analysis.
    pub checks: Vec<Check>,
    /// The report.
    pub report: String,
}

const FIELDS: [&str; 6] = [
    "invoice_number",
    "issue_date",
    "supplier",
    "customer",
    "total_amount",
    "currency",
];

const SUPPLIERS: [&str; 5] = [
    "Northwind Traders",
    "Contoso Ltd",
    "Fabrikam Inc",
    "Tailspin Toys",
    "Adventure Works",
];

const CUSTOMERS: [&str; 4] = [
    "Woodgrove Bank",
    "Litware Inc",
    "Proseware",
    "Wide World Importers",
];

const BLOCK_KINDS: [&str; 5] = ["heading", "paragraph", "table", "key_value", "footer"];

pub(super) fn unpack(progress: Progress) -> UnpackedDocument {
    let mut rng = Rng::new(progress.seed("entry-unpack"));
    let pages = (1..=3)
        .map(|number| PageRef {
            number,
            width_pt: 595,
            height_pt: 842,
            checksum: format!("{:016x}", rng.next()),
        })
        .collect();
    let output = UnpackedDocument {
        file_name: format!("{}.pdf", progress.document_id),
        media_type: "application/pdf".into(),
        byte_size: 40_000 + rng.below(200_000),
        pages,
        text: String::new(),
        progress,
    };
    sized(
        output,
        |o| &mut o.text,
        |o| (o.progress.target_bytes(), rng.next()),
    )
}

pub(super) fn validate_inputs(progress: Progress, document: &UnpackedDocument) -> ValidatedInputs {
    let mut rng = Rng::new(progress.seed("validate-inputs"));
    let page_count = document.pages.len() as u32;
    let checks = vec![
        check("media_type_supported", true, &document.media_type),
        check(
            "page_count_within_limit",
            true,
            &format!("{page_count} of 200 pages"),
        ),
        check(
            "text_layer_present",
            true,
            &format!("{} bytes", document.text.len()),
        ),
        check("not_encrypted", true, "no password protection"),
    ];
    let output = ValidatedInputs {
        progress,
        language: "en".into(),
        page_count,
        checks,
        notes: String::new(),
    };
    sized(
        output,
        |o| &mut o.notes,
        |o| (o.progress.target_bytes(), rng.next()),
    )
}

pub(super) fn load_configuration(progress: Progress, inputs: &ValidatedInputs) -> Configuration {
    let mut rng = Rng::new(progress.seed("load-configuration"));
    let output = Configuration {
        profile: format!("invoice-{}-v3", inputs.language),
        model: "layout-analyser-2".into(),
        fields: FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        thresholds: vec![
            Threshold {
                name: "min_field_confidence".into(),
                value: 0.7,
            },
            Threshold {
                name: "min_block_confidence".into(),
                value: 0.5,
            },
            Threshold {
                name: "max_total_deviation".into(),
                value: 0.01,
            },
        ],
        instructions: String::new(),
        progress,
    };
    sized(
        output,
        |o| &mut o.instructions,
        |o| (o.progress.target_bytes(), rng.next()),
    )
}

pub(super) fn extract_layout(progress: Progress, round: u32) -> Layout {
    let mut rng = Rng::new(progress.seed("extract-layout"));
    let blocks = (0..6)
        .map(|i| Block {
            page: 1 + i / 2,
            kind: BLOCK_KINDS[rng.below(BLOCK_KINDS.len() as u64) as usize].into(),
            bbox: [
                36 + rng.below(40) as u32,
                60 + 120 * (i % 2) + rng.below(40) as u32,
                400 + rng.below(100) as u32,
                40 + rng.below(200) as u32,
            ],
            confidence: rng.confidence(),
        })
        .collect();
    let output = Layout {
        progress,
        round,
        blocks,
        text: String::new(),
    };
    sized(
        output,
        |o| &mut o.text,
        |o| (o.progress.target_bytes(), rng.next()),
    )
}

pub(super) fn analyse(progress: Progress, round: u32, previous: Option<&Analysis>) -> Analysis {
    let mut rng = Rng::new(progress.seed("analyse-document"));
    let doc_seed = fnv1a(&[progress.document_id.as_bytes()]);
    let mut doc = Rng::new(doc_seed);
    let values = [
        format!("INV-{:06}", doc.below(1_000_000)),
        format!("2025-{:02}-{:02}", 1 + doc.below(12), 1 + doc.below(28)),
        SUPPLIERS[doc.below(SUPPLIERS.len() as u64) as usize].to_owned(),
        CUSTOMERS[doc.below(CUSTOMERS.len() as u64) as usize].to_owned(),
        format!("{}.{:02}", 100 + doc.below(90_000), doc.below(100)),
        "EUR".to_owned(),
    ];
    let fields = FIELDS
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (name, value))| {
            // Each refinement round is a little surer of itself.
            let before = previous.map_or(0.0, |p| p.fields[i].confidence);
            let confidence = rng.confidence().max(before);
            ExtractedField {
                name: (*name).to_owned(),
                value,
                confidence,
                page: 1 + (i as u32) / 3,
            }
        })
        .collect();
    let output = Analysis {
        progress,
        round,
        classification: "invoice".into(),
        fields,
        summary: String::new(),
    };
    sized(
        output,
        |o| &mut o.summary,
        |o| (o.progress.target_bytes(), rng.next()),
    )
}

pub(super) fn validate_outputs(progress: Progress, analysis: &Analysis) -> ValidationReport {
    let mut rng = Rng::new(progress.seed("validate-outputs"));
    let low = analysis.fields.iter().filter(|f| f.confidence < 0.7).count();
    let checks = vec![
        check(
            "all_fields_present",
            analysis.fields.len() == FIELDS.len(),
            &format!("{} of {} fields", analysis.fields.len(), FIELDS.len()),
        ),
        check(
            "confidence_above_threshold",
            low == 0,
            &format!("{low} field(s) below 0.7"),
        ),
        check("classification_known", true, &analysis.classification),
    ];
    let output = ValidationReport {
        progress,
        valid: checks.iter().all(|c| c.passed),
        checks,
        report: String::new(),
    };
    sized(
        output,
        |o| &mut o.report,
        |o| (o.progress.target_bytes(), rng.next()),
    )
}

fn check(name: &str, passed: bool, detail: &str) -> Check {
    Check {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

/// Fills the text field of `value` so that its JSON is exactly the target
/// size (or leaves it empty if the rest is already larger).
fn sized<T: Serialize>(
    mut value: T,
    text: impl Fn(&mut T) -> &mut String,
    target_and_seed: impl FnOnce(&T) -> (usize, u64),
) -> T {
    let (target, seed) = target_and_seed(&value);
    let base = json_len(&value);
    *text(&mut value) = prose(seed, target.saturating_sub(base));
    value
}

fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

const WORDS: [&str; 48] = [
    "invoice",
    "total",
    "clause",
    "party",
    "section",
    "table",
    "amount",
    "signature",
    "page",
    "header",
    "footer",
    "paragraph",
    "date",
    "reference",
    "customer",
    "supplier",
    "schedule",
    "term",
    "payment",
    "delivery",
    "address",
    "figure",
    "note",
    "summary",
    "line",
    "item",
    "quantity",
    "price",
    "tax",
    "currency",
    "period",
    "account",
    "agreement",
    "document",
    "layout",
    "region",
    "column",
    "heading",
    "confidence",
    "field",
    "value",
    "order",
    "number",
    "balance",
    "discount",
    "remittance",
    "contact",
    "approval",
];

/// `len` bytes of plain ASCII sentences (nothing JSON would escape).
fn prose(seed: u64, len: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut text = String::with_capacity(len + 16);
    let mut in_sentence = 0;
    while text.len() < len {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if in_sentence == 0 {
            if !text.is_empty() {
                text.push(' ');
            }
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.push(first.to_ascii_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push(' ');
            text.push_str(word);
        }
        in_sentence += 1;
        if in_sentence > 6 + rng.below(8) {
            text.push('.');
            in_sentence = 0;
        }
    }
    text.truncate(len);
    text
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A confidence from 0.70 to 0.99, with two decimals.
    fn confidence(&mut self) -> f64 {
        (70 + self.below(30)) as f64 / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(output_kb: u32) -> Progress {
        Progress::first(&DocumentJob::new("invoice-42").output_kb(output_kb))
    }

    #[test]
    fn every_output_is_exactly_the_requested_size() {
        for kb in [1, 2, 4, 32] {
            let p = progress(kb);
            let target = kb as usize * 1024;
            let unpacked = unpack(p.clone());
            let inputs = validate_inputs(p.next(), &unpacked);
            let configuration = load_configuration(p.next(), &inputs);
            let layout = extract_layout(p.next(), 1);
            let analysis = analyse(p.next(), 1, None);
            let refined = analyse(p.next().next(), 2, Some(&analysis));
            let report = validate_outputs(p.next(), &analysis);
            assert_eq!(json_len(&unpacked), target);
            assert_eq!(json_len(&inputs), target);
            assert_eq!(json_len(&configuration), target);
            assert_eq!(json_len(&layout), target);
            assert_eq!(json_len(&analysis), target);
            assert_eq!(json_len(&refined), target);
            assert_eq!(json_len(&report), target);
            assert!(report.valid);
            // A moderately sized text, next to several fields.
            assert!(analysis.summary.len() > target / 3, "{}", analysis.summary.len());
            assert_eq!(analysis.fields.len(), 6);
        }
    }

    #[test]
    fn outputs_are_deterministic_and_differ_by_document() {
        assert_eq!(analyse(progress(2), 1, None), analyse(progress(2), 1, None));
        let other = Progress::first(&DocumentJob::new("invoice-43"));
        assert_ne!(
            analyse(progress(2), 1, None).fields,
            analyse(other, 1, None).fields
        );
    }

    #[test]
    fn refinement_never_lowers_confidence() {
        let first = analyse(progress(2), 1, None);
        let second = analyse(progress(2).next(), 2, Some(&first));
        for (a, b) in first.fields.iter().zip(&second.fields) {
            assert!(b.confidence >= a.confidence);
            assert_eq!(a.value, b.value);
        }
    }

    #[test]
    fn prose_is_plain_text_of_the_exact_length() {
        for len in [0, 1, 17, 3000] {
            let text = prose(7, len);
            assert_eq!(text.len(), len);
            assert!(text
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == ' ' || c == '.'));
        }
    }
}
