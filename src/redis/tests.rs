use super::*;

fn scan_all(bytes: &[u8]) -> Result<Option<usize>, RespError> {
    Scan::default().advance(bytes)
}

fn xread_reply(entries: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
    let mut out = b"*1\r\n*2\r\n$13\r\neligd:changes\r\n".to_vec();
    out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
    for (id, fields) in entries {
        out.extend_from_slice(b"*2\r\n");
        out.extend_from_slice(format!("${}\r\n{id}\r\n", id.len()).as_bytes());
        let flat: Vec<&[u8]> = fields
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
            .collect();
        encode(&flat, &mut out);
    }
    out
}

#[test]
fn a_reply_arriving_byte_by_byte_is_found_complete_exactly_once() {
    let reply = xread_reply(&[
        ("5-0", &[("op", "delete"), ("national_id", "0012345679")]),
        ("5-1", &[("member", "{\"a\":\"x\r\ny\"}")]),
    ]);
    let mut scan = Scan::default();
    for end in 1..reply.len() {
        assert_eq!(
            scan.advance(&reply[..end]).unwrap(),
            None,
            "complete at {end}?"
        );
    }
    assert_eq!(scan.advance(&reply).unwrap(), Some(reply.len()));
    let entries = decode_xread(&reply).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].id, FeedPosition { ms: 5, seq: 0 });
    assert_eq!(
        entries[0].fields[1],
        (b"national_id".to_vec(), b"0012345679".to_vec())
    );
    assert_eq!(entries[1].fields[0].1, b"{\"a\":\"x\r\ny\"}".to_vec());
}

#[test]
fn scalars_nils_and_nested_replies_decode() {
    assert_eq!(scan_all(b"+OK\r\n").unwrap(), Some(5));
    assert_eq!(decode(b":42\r\n").unwrap(), Frame::Int(42));
    assert_eq!(decode(b"$-1\r\n").unwrap(), Frame::Nil);
    assert_eq!(decode(b"*-1\r\n").unwrap(), Frame::Nil);
    assert_eq!(
        decode(b"-ERR no such key\r\n").unwrap(),
        Frame::Error("ERR no such key".into())
    );
    let nested = b"*2\r\n$6\r\nlength\r\n*2\r\n:1\r\n*0\r\n";
    assert_eq!(scan_all(nested).unwrap(), Some(nested.len()));
    assert_eq!(
        decode(nested).unwrap(),
        Frame::Array(vec![
            Frame::Bulk(b"length".to_vec()),
            Frame::Array(vec![Frame::Int(1), Frame::Array(vec![])]),
        ])
    );
    assert_eq!(decode_xread(b"*-1\r\n").unwrap(), Vec::new());
    assert_eq!(decode_entries(b"*0\r\n").unwrap(), Vec::new());
}

#[test]
fn what_follows_a_complete_reply_is_not_part_of_it() {
    let two = b":1\r\n:2\r\n";
    assert_eq!(scan_all(two).unwrap(), Some(4));
}

#[test]
fn malformed_replies_are_errors() {
    for bad in [
        &b"?x\r\n"[..],
        b"$abc\r\n",
        b"*x\r\n",
        b"\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
    ] {
        assert!(
            scan_all(bad).is_err() || decode(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Well-formed RESP that is not an XREAD answer.
    for wrong in [
        &b":1\r\n"[..],
        b"*2\r\n:1\r\n:2\r\n",
        b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\nbad\r\n*0\r\n",
    ] {
        assert!(
            decode_xread(wrong).is_err(),
            "{:?}",
            String::from_utf8_lossy(wrong)
        );
    }
    let odd = b"*1\r\n*2\r\n$3\r\n1-1\r\n*1\r\n$2\r\nop\r\n";
    assert!(decode_entries(odd).is_err());
}

proptest::proptest! {
    /// Whatever a server (or a broken network) sends, scanning and decoding never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let _ = scan_all(&bytes);
        let _ = decode(&bytes);
        let _ = decode_xread(&bytes);
        let _ = decode_entries(&bytes);
    }

    /// Arbitrary field bytes survive encoding, scanning and decoding unchanged.
    #[test]
    fn entries_round_trip(fields in proptest::collection::vec(
        (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
         proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)), 0..6)) {
        let mut reply = b"*1\r\n*2\r\n$3\r\n7-3\r\n".to_vec();
        let flat: Vec<&[u8]> = fields.iter().flat_map(|(k, v)| [k.as_slice(), v.as_slice()]).collect();
        encode(&flat, &mut reply);
        proptest::prop_assert_eq!(scan_all(&reply).unwrap(), Some(reply.len()));
        let entries = decode_entries(&reply).unwrap();
        proptest::prop_assert_eq!(&entries[0].fields, &fields);
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/resp.rs): an entry whose field array claims 700
/// million elements made the decoder reserve them all, and the process abort. Lengths from
/// the wire never size an allocation beyond what the bytes left could hold.
#[test]
fn a_lying_array_length_is_an_error_not_an_allocation() {
    let reply = b"*1\r\n*2\r\n$15\r\n1700000000000-0\r\n*700000000\r\n+a\r\n";
    assert!(decode_entries(reply).is_err());
    let xread = b"*1\r\n*2\r\n$13\r\neligd:changes\r\n*900000000\r\n";
    assert!(decode_xread(xread).is_err());
    let crash = include_bytes!("../../fuzz/regressions/resp-huge-array");
    let _ = decode(crash);
    let _ = decode_xread(crash);
    let _ = decode_entries(crash);
}
