//! The reporting time zone. Instants are stored and compared in UTC; only *calendar* questions — which
//! day, week, month or hour an instant falls in — depend on the zone. Metric SQL asks them through
//! `local(ts)`, which every session defines for its engine's zone: the same instant, typed as a
//! timestamp in that zone, so `date_trunc`, `date_part` and `CAST(… AS DATE)` work on local wall-clock
//! time, across DST changes (DataFusion truncates tz-aware timestamps in local time).

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `local(ts)`: `ts` as a timestamp in the reporting zone.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Local {
    signature: Signature,
    zone: Arc<str>,
}

impl ScalarUDFImpl for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [DataType::Timestamp(_, _) | DataType::Utf8 | DataType::Utf8View | DataType::Null] => {
                Ok(vec![
                    // Kartoteka's instants are UTC; a naive timestamp is one too.
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ])
            }
            _ => plan_err!("local(ts) takes one timestamp, got {arg_types:?}"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(Arc::clone(&self.zone)),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("local(ts) takes one argument");
        };
        // Between two zones the cast only relabels: the microseconds since the epoch are the same.
        arg.cast_to(&self.return_type(&[])?, None)
    }
}

/// The `local` function for `zone` (an IANA name, already validated).
pub fn local_udf(zone: chrono_tz::Tz) -> ScalarUDF {
    ScalarUDF::from(Local {
        signature: Signature::user_defined(Volatility::Immutable),
        zone: zone.name().into(),
    })
}

/// `source_key(text)`: the BIGINT a source's text key is stored as ([`crate::model::text_key`]; a whole
/// number is itself), so `WHERE deal_id = source_key('C536379')` finds the CRM's record.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SourceKey {
    signature: Signature,
}

impl ScalarUDFImpl for SourceKey {
    fn name(&self) -> &str {
        "source_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("source_key(text) takes one argument");
        };
        let array = arg.to_array(args.number_rows)?;
        let array = arrow::compute::cast(&array, &DataType::Utf8)?;
        let texts = arrow::array::cast::as_string_array(&array);
        let keys: arrow::array::Int64Array = texts
            .iter()
            .map(|t| t.map(crate::model::key_of_text))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(keys)))
    }
}

/// The `source_key` function.
pub fn source_key_udf() -> ScalarUDF {
    ScalarUDF::from(SourceKey {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
}
